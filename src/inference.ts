import { alignBatches, defaultDetector, resolveAlign, type AlignOptions, type FaceGeometry } from './align'
import { ALIGN_MODES, type AlignMode } from './options'
import { decodedBatches, type DecodeOptions } from './data/decode'
import { checkCenterCrop, IDENTITY_TRANSFORM, preprocessImage, withCenterCrop } from './data/preprocess'
import { embedRows } from './embed-rows'
import { checkKeys } from './errors'
import type { FaceNet } from './model'

export type { DecodeOptions } from './data/decode'

/** Metadata key under which a model file records the center crop it was trained with. */
export const CENTER_CROP_KEY = 'centerCrop'

/**
 * Metadata key under which a model file records the alignment it expects
 * ({@link AlignMode}): `findFaces`, `FaceGallery` and `embedFiles(…, { align: true })` then
 * cut faces that way at the model's input size. The pretrained `'dlib-resnet-v1'` stores `'dlib'`.
 */
export const ALIGNMENT_KEY = 'alignment'

/** The alignment stored with a model (see {@link ALIGNMENT_KEY}), if it names a known one. */
export function storedAlignment(model: FaceNet): AlignMode | undefined {
  const stored = model.metadata[ALIGNMENT_KEY]
  return (ALIGN_MODES as readonly string[]).includes(stored ?? '') ? (stored as AlignMode) : undefined
}

/** The center crop stored with a model (see {@link CENTER_CROP_KEY}), else `1`. */
export function storedCenterCrop(model: FaceNet): number {
  const stored = Number(model.metadata[CENTER_CROP_KEY])
  return Number.isFinite(stored) && stored > 0 && stored <= 1 ? stored : 1
}

/**
 * Face alignment before embedding (see {@link AlignOptions}); `faces` defaults to
 * `'largest'` here. Use the same `size`, `mode` and `margin` the model was trained on.
 */
export type EmbedAlignOptions = Omit<AlignOptions, 'batchSize'>

export interface EmbedFilesOptions extends DecodeOptions {
  /**
   * `true` or alignment options: detect the faces of each photo and embed aligned crops
   * (then `centerCrop` applies to the aligned crop). Default `false`: the files are
   * already face crops. Without a `mode`, the model's stored alignment ({@link ALIGNMENT_KEY})
   * is used, at the model's input size.
   */
  align?: boolean | EmbedAlignOptions
}

/** Embeddings of photos through face alignment: what {@link embedFiles} returns with `align`. */
export interface AlignedEmbeddings {
  /**
   * rows × dim values. With `faces: 'largest'` (default) row i is photo i, and the row of
   * a photo without a face is all NaN. With `faces: 'all'` there is one row per face.
   */
  embeddings: Float32Array
  dim: number
  /** The photo each row came from (the identity with `'largest'`). */
  imageIndex: Int32Array
  /** Which of the photo's detections each row is; −1 for a NaN row. */
  faceIndex: Int32Array
  /** Photos in which no face was found, in input order. */
  noFace: number[]
  /** Every photo's detections, in file pixels. */
  detections: FaceGeometry[][]
}

/**
 * Decodes image files (JPEG, PNG, WebP) at the model's input size and embeds them:
 * N × embeddingDim rows, in the order of `paths`. Decoding of the next batch overlaps the
 * forward pass of the current one. With `align`, each photo's faces are detected and
 * aligned first, and the result is an {@link AlignedEmbeddings}: a photo without a face
 * is reported in `noFace`, never thrown.
 */
export async function embedFiles(model: FaceNet, paths: readonly string[], options?: DecodeOptions & { align?: false }): Promise<Float32Array>
export async function embedFiles(model: FaceNet, paths: readonly string[], options: DecodeOptions & { align: true | EmbedAlignOptions }): Promise<AlignedEmbeddings>
export async function embedFiles(model: FaceNet, paths: readonly string[], options?: EmbedFilesOptions): Promise<Float32Array | AlignedEmbeddings>
export async function embedFiles(model: FaceNet, paths: readonly string[], options: EmbedFilesOptions = {}): Promise<Float32Array | AlignedEmbeddings> {
  checkKeys('embedFiles', options, ['centerCrop', 'batchSize', 'align'])
  if (options.align) return embedAligned(model, paths, withStoredAlignment(model, options.align === true ? {} : options.align), options)
  const centerCrop = options.centerCrop ?? storedCenterCrop(model)
  return (await embedRows(model, decodedBatches(paths, model.inputSize, { ...options, centerCrop }), paths.length)).embeddings
}

/** `align` with the model's stored alignment mode and input size where it names none. */
function withStoredAlignment(model: FaceNet, align: EmbedAlignOptions): EmbedAlignOptions {
  const mode = storedAlignment(model)
  if (mode === undefined || align.mode !== undefined) return align
  const { height, width } = model.inputSize
  return { mode, ...(height === width ? { size: height } : {}), ...align }
}

async function embedAligned(model: FaceNet, paths: readonly string[], align: EmbedAlignOptions, options: DecodeOptions): Promise<AlignedEmbeddings> {
  const dim = model.embeddingDim
  const size = model.inputSize
  const transform = withCenterCrop(IDENTITY_TRANSFORM, checkCenterCrop(options.centerCrop ?? storedCenterCrop(model)))
  const resolved = resolveAlign({ ...align, batchSize: options.batchSize }, 'largest')
  const largest = resolved.faces === 'largest'
  const rows: Float32Array[] = []
  const imageIndex: number[] = []
  const faceIndex: number[] = []
  const noFace: number[] = []
  const detections: FaceGeometry[][] = []
  const s = resolved.size
  const per = s * s * 3
  for await (const round of alignBatches(paths, { ...align, batchSize: resolved.batchSize, faces: resolved.faces }, defaultDetector(resolved), 'largest')) {
    const c = round.crops
    const n = c.shape[0]
    const pixels = new Uint8Array(n * size.height * size.width * 3)
    // Aligned crops are square at the align size; the model's input may differ.
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const crop = Buffer.from(c.data.buffer, c.data.byteOffset + i * per, per)
        pixels.set(await preprocessImage({ kind: 'raw', name: paths[c.imageIndex[i]!]!, data: crop, height: s, width: s }, size, transform), i * size.height * size.width * 3)
      }),
    )
    const embedded = n > 0 ? await model.embed({ data: pixels, shape: [n, size.height, size.width, 3] }) : new Float32Array(0)
    const byImage = new Map<number, number>()
    c.imageIndex.forEach((image, i) => byImage.set(image, i))
    if (largest) {
      for (let k = 0; k < round.count; k++) {
        const image = round.start + k
        const i = byImage.get(image)
        rows.push(i === undefined ? new Float32Array(dim).fill(NaN) : embedded.subarray(i * dim, (i + 1) * dim))
        imageIndex.push(image)
        faceIndex.push(i === undefined ? -1 : c.faceIndex[i]!)
      }
    } else {
      for (let i = 0; i < n; i++) {
        rows.push(embedded.subarray(i * dim, (i + 1) * dim))
        imageIndex.push(c.imageIndex[i]!)
        faceIndex.push(c.faceIndex[i]!)
      }
    }
    noFace.push(...c.noFace)
    detections.push(...c.detections)
  }
  const embeddings = new Float32Array(rows.length * dim)
  rows.forEach((row, i) => embeddings.set(row, i * dim))
  return { embeddings, dim, imageIndex: Int32Array.from(imageIndex), faceIndex: Int32Array.from(faceIndex), noFace, detections }
}
