/**
 * Photo in, identities out: every face of a photo with its box, landmarks, score and
 * embedding (aligned as the model needs), and a gallery of known people to name them by.
 */
import { ImageFolder } from './data/image-folder'
import type { FaceGeometry } from './align'
import { checkKeys, IncompatibleModelsError, InvalidArgumentError, ShapeError } from './errors'
import { embedFiles, storedAlignment, type EmbedAlignOptions } from './inference'
import type { FaceNet } from './model'
import { storedThreshold } from './threshold'

/** A face found in a photo, with its embedding. */
export interface RecognizedFace {
  /** `[x1, y1, x2, y2]` in the photo's pixels. */
  box: [number, number, number, number]
  /** MTCNN's face probability. */
  score: number
  /** Left eye, right eye, nose, mouth left, mouth right, each `[x, y]`. */
  landmarks: [number, number][]
  /** The model's embedding of the face, aligned as the model needs (`model.embeddingDim` values). */
  embedding: Float32Array
}

export interface FindFacesOptions {
  /**
   * How faces are cut out before embedding. Default: what the model stores (the pretrained
   * `'dlib-resnet-v1'` stores `{ mode: 'dlib' }`), at the model's input size; else `'template'`.
   */
  align?: Omit<EmbedAlignOptions, 'faces'>
  /** Photos decoded and embedded per round. Default 32. */
  batchSize?: number
}

function alignmentFor(model: FaceNet, align: FindFacesOptions['align']): EmbedAlignOptions {
  const mode = align?.mode ?? storedAlignment(model) ?? 'template'
  const { height, width } = model.inputSize
  return { ...(height === width ? { size: height } : {}), ...align, mode, faces: 'all' }
}

/**
 * Finds every face in each photo (MTCNN) and embeds it: one list per photo, in the
 * detector's order (most confident first); a photo without a face gives an empty list. A
 * photo that cannot be decoded rejects with a `DataError` naming it.
 *
 * ```ts
 * const model = await FaceNet.pretrained()
 * const [faces] = await findFaces(model, ['group.jpg'])
 * ```
 */
export async function findFaces(model: FaceNet, photos: readonly string[], options: FindFacesOptions = {}): Promise<RecognizedFace[][]> {
  checkKeys('findFaces', options, ['align', 'batchSize'])
  if (!Array.isArray(photos) || !photos.every((p) => typeof p === 'string' && p.length > 0)) {
    throw new InvalidArgumentError('findFaces: photos must be an array of file paths')
  }
  const out = await embedFiles(model, photos, { align: alignmentFor(model, options.align), ...(options.batchSize ? { batchSize: options.batchSize } : {}) })
  const dim = out.dim
  const faces: RecognizedFace[][] = photos.map(() => [])
  out.imageIndex.forEach((image, row) => {
    const found = out.detections[image]![out.faceIndex[row]!] as FaceGeometry
    faces[image]!.push({
      box: [...found.box] as [number, number, number, number],
      score: found.score ?? NaN,
      landmarks: found.landmarks.map(([x, y]) => [x!, y!] as [number, number]),
      embedding: out.embeddings.slice(row * dim, (row + 1) * dim),
    })
  })
  return faces
}

/** Who a face is, by its nearest gallery identity. */
export interface Identification {
  /** The nearest identity if it is within the threshold, else `null` (unknown). */
  identity: string | null
  /** Squared-L2 distance to the nearest image of the nearest identity. */
  distance: number
  /** The nearest identities, nearest first, each at the distance of its nearest image. */
  candidates: { identity: string; distance: number }[]
}

export interface IdentifyOptions {
  /** Squared-L2 distance below which a face is that identity. Default: the gallery's. */
  threshold?: number
  /** Candidates listed. Default 5. */
  top?: number
}

export interface GalleryOptions {
  /**
   * The threshold identities are matched with (squared L2). Default: the one stored with
   * the model (`facenet eval` stores one; the pretrained model carries dlib's).
   */
  threshold?: number
  /**
   * Alignment of the gallery photos, as {@link FindFacesOptions.align}; `false`: the photos
   * are face crops already, embedded whole.
   */
  align?: FindFacesOptions['align'] | false
}

/**
 * Known people: embeddings labelled by identity. A face is named after the identity of its
 * nearest gallery embedding, or unknown when that is farther than the threshold.
 */
export class FaceGallery {
  readonly identities: readonly string[]
  readonly dim: number
  readonly threshold: number
  /**
   * The embedding space of the model that embedded the gallery ({@link FaceNet.embeddingSpace}),
   * which probes must share; `undefined` for a gallery of embeddings given without one.
   */
  readonly embeddingSpace: string | undefined
  readonly #embeddings: Float32Array
  readonly #labels: Int32Array

  private constructor(identities: readonly string[], labels: Int32Array, embeddings: Float32Array, dim: number, threshold: number, embeddingSpace: string | undefined) {
    this.identities = identities
    this.#labels = labels
    this.#embeddings = embeddings
    this.dim = dim
    this.threshold = threshold
    this.embeddingSpace = embeddingSpace
  }

  /**
   * The largest face of every photo under `dir`, one subfolder per identity
   * (`dir/Ada_Lovelace/1.jpg`), embedded by `model`. Photos without a face are left out
   * and returned in `noFace`.
   */
  static async fromFolder(model: FaceNet, dir: string, options: GalleryOptions = {}): Promise<{ gallery: FaceGallery; noFace: string[] }> {
    checkKeys('FaceGallery.fromFolder', options, ['threshold', 'align'])
    const threshold = options.threshold ?? requiredThreshold(model)
    checkThreshold(threshold)
    const folder = await ImageFolder.open(dir)
    const paths = folder.items.map((item) => item.path)
    const dim = model.embeddingDim
    const out =
      options.align === false
        ? { embeddings: await embedFiles(model, paths), noFace: [] as number[] }
        : await embedFiles(model, paths, { align: { ...alignmentFor(model, options.align), faces: 'largest' } })
    const noFace = new Set(out.noFace)
    const kept = paths.map((_, i) => i).filter((i) => !noFace.has(i))
    const embeddings = new Float32Array(kept.length * dim)
    kept.forEach((i, row) => embeddings.set(out.embeddings.subarray(i * dim, (i + 1) * dim), row * dim))
    const labels = Int32Array.from(kept, (i) => folder.labels[i]!)
    const space = await model.embeddingSpace()
    return { gallery: new FaceGallery(folder.identities, labels, embeddings, dim, threshold, space), noFace: [...noFace].map((i) => paths[i]!) }
  }

  /**
   * A gallery of embeddings you already have: `names[i]` is the identity of row i.
   * `embeddingSpace`: that of the model which embedded them (`await model.embeddingSpace()`,
   * stored beside the embeddings), so that {@link checkCompatible} can hold probes to it.
   */
  static fromEmbeddings(names: readonly string[], embeddings: Float32Array, dim: number, threshold: number, options: { embeddingSpace?: string } = {}): FaceGallery {
    checkKeys('FaceGallery.fromEmbeddings', options, ['embeddingSpace'])
    if (!Number.isInteger(dim) || dim < 1 || embeddings.length !== names.length * dim) {
      throw new ShapeError(`${names.length} names need ${names.length}×${dim} embedding values, got ${embeddings.length}`)
    }
    checkThreshold(threshold)
    const space = options.embeddingSpace
    if (space !== undefined && (typeof space !== 'string' || space.length === 0)) throw new InvalidArgumentError(`embeddingSpace must be a non-empty string, got ${String(space)}`)
    const identities = [...new Set(names)].sort()
    const index = new Map(identities.map((id, i) => [id, i]))
    return new FaceGallery(identities, Int32Array.from(names, (n) => index.get(n)!), embeddings.slice(), dim, threshold, space)
  }

  /**
   * Refuses, with an {@link IncompatibleModelsError}, a probe model whose embeddings do not
   * compare with this gallery's: another embedding dimension, or another embedding space
   * (a model that was not trained harmonically with the gallery's, FaceNet §7). A gallery
   * without a recorded space accepts any model of its dimension.
   */
  async checkCompatible(probeModel: FaceNet): Promise<void> {
    const probeSpace = this.embeddingSpace === undefined ? undefined : await probeModel.embeddingSpace()
    const why = spaceMismatch({ dim: this.dim, space: this.embeddingSpace }, { dim: probeModel.embeddingDim, space: probeSpace })
    if (why) throw new IncompatibleModelsError(`the gallery (${why.gallery}) and the probe model (${why.probe}) ${HARMONIC_HINT}`)
  }

  /** Gallery images. */
  get size(): number {
    return this.#labels.length
  }

  /** Names the face of `embedding` (`dim` values), or `null` beyond the threshold. */
  identify(embedding: Float32Array, options: IdentifyOptions = {}): Identification {
    checkKeys('identify', options, ['threshold', 'top'])
    if (embedding.length !== this.dim) throw new ShapeError(`an embedding of ${embedding.length} values for a gallery of ${this.dim}`)
    const threshold = options.threshold ?? this.threshold
    checkThreshold(threshold)
    const top = options.top ?? 5
    if (!Number.isInteger(top) || top < 1) throw new InvalidArgumentError(`top must be a positive integer, got ${String(top)}`)
    const best = new Map<number, number>()
    for (let g = 0; g < this.#labels.length; g++) {
      const d = squaredDistance(embedding, this.#embeddings, g * this.dim)
      const id = this.#labels[g]!
      if (!(best.get(id)! <= d)) best.set(id, d)
    }
    const candidates = [...best]
      .sort((a, b) => a[1] - b[1])
      .slice(0, top)
      .map(([id, d]) => ({ identity: this.identities[id]!, distance: d }))
    const nearest = candidates[0]
    return { identity: nearest && nearest.distance < threshold ? nearest.identity : null, distance: nearest?.distance ?? Infinity, candidates }
  }
}

/** The end of every refusal to compare two models' embeddings. */
export const HARMONIC_HINT =
  'do not share an embedding space: their embeddings do not compare. Embed both sides with one model, ' +
  'or train the probe model with `harmonic: { with: galleryModel }` (FaceNet §7) so it declares the gallery model\'s space'

/**
 * Each side described (dimension and space) when the two cannot be compared, else
 * `undefined`. A side of unknown space (`undefined`) matches any space of its dimension.
 */
export function spaceMismatch(
  gallery: { dim: number; space: string | undefined },
  probe: { dim: number; space: string | undefined },
): { gallery: string; probe: string } | undefined {
  const spaced = gallery.space !== undefined && probe.space !== undefined
  if (gallery.dim === probe.dim && (!spaced || gallery.space === probe.space)) return undefined
  const describe = (side: { dim: number; space: string | undefined }) => `${side.dim}-d${side.space === undefined ? '' : `, space ${side.space}`}`
  return { gallery: describe(gallery), probe: describe(probe) }
}

/** ‖a − rows[at..at+len(a)]‖². */
function squaredDistance(a: Float32Array, rows: Float32Array, at: number): number {
  let sum = 0
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - rows[at + i]!
    sum += d * d
  }
  return sum
}

function checkThreshold(threshold: number): void {
  if (!(typeof threshold === 'number' && threshold > 0 && Number.isFinite(threshold))) {
    throw new InvalidArgumentError(`threshold must be a positive squared-L2 distance, got ${String(threshold)}`)
  }
}

function requiredThreshold(model: FaceNet): number {
  const stored = storedThreshold(model)
  if (stored === undefined) {
    throw new InvalidArgumentError("the model has no stored threshold: pass `threshold`, or run 'facenet eval' on the model to store one")
  }
  return stored
}
