/**
 * From photos to aligned face crops: decode, detect (MTCNN), then warp each face onto the
 * five-point template (or cut facenet-pytorch's box + margin) in the native core.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { dirname } from 'node:path'
import sharp from 'sharp'
import { binding } from './binding'
import { threadCount } from './check'
import { FaceDetector, inFilePixels } from './detect'
import type { Device } from './device'
import { callBinding, DataError, InvalidArgumentError, ShapeError } from './errors'
import { decodePhoto, MAX_PHOTO_PIXELS } from './data/preprocess'
import { type AlignMode, type FaceSelection, type OnBadImage } from './options'
import { ALIGN, DLIB_CHIP_SIZE } from './tables/align'
import { resolveOption } from './tables/table'
import type { ImageBatch } from './model'

export { ALIGN_MODES, type AlignMode, type FaceSelection } from './options'

/** What alignment needs of a detected face (a `DetectedFace` from `detectFaces` fits). */
export interface FaceGeometry {
  /** x1, y1, x2, y2 in the photo's pixels. */
  box: readonly number[]
  /** Left eye, right eye, nose, mouth left, mouth right: five (x, y) points. */
  landmarks: readonly (readonly number[])[]
  score?: number
}

/** Finds faces in one photo at a time (a `FaceDetector` fits). */
export interface FaceFinder {
  detect(images: ImageBatch): Promise<readonly (readonly FaceGeometry[])[]>
  /** Called when the library loaded the detector itself and is done with it. */
  dispose?(): void
}

/**
 * The most pixels a photo is decoded at for detection and alignment; larger photos are
 * downscaled (aspect kept) to fit, and their boxes and landmarks are reported in the
 * file's own pixels. 4096 × 4096 (16.8 MP) keeps every phone photo at full size; the same
 * limit as `FaceDetector.detectFiles`.
 */
export const ALIGN_MAX_PIXELS = MAX_PHOTO_PIXELS

export { ALIGN_MAX_SIZE } from './tables/align'

export interface AlignOptions {
  /** Side of the square crops in pixels, 1 to {@link ALIGN_MAX_SIZE} (1024). Default `160` (facenet-pytorch's `image_size`); `150` in `'dlib'` mode. */
  size?: number
  /**
   * `'template'` (default): the least-squares similarity (rotation, uniform scale,
   * translation) that maps the five landmarks onto the ArcFace/insightface 112×112
   * five-point template, scaled to `size`; bilinear, black outside the photo.
   * `'margin'`: facenet-pytorch's `extract_face`: the box grown by `margin`, clipped to the
   * photo, resized by area averaging.
   * `'dlib'`: the chip dlib's face-recognition ResNet (`'dlib-resnet-v1'`) was trained on,
   * `get_face_chip_details(shape, 150, 0.25)`, made from MTCNN's landmarks: the similarity
   * onto a five-point template fitted to dlib's chips on LFW (mean pixel difference from
   * dlib's own chips in bench/RESULTS.md); a face larger than twice the chip is first
   * downscaled by halves, as dlib does.
   */
  mode?: AlignMode
  /**
   * Margin of `'margin'` mode in pixels *of the output crop*, as facenet-pytorch counts it
   * (its `margin` at `image_size`). Default `0`, facenet-pytorch's default.
   */
  margin?: number
  /** `'all'` (default for {@link alignFaces}) or `'largest'` (the box of largest area). */
  faces?: FaceSelection
  /**
   * The faces already found, per photo (e.g. from `detectFaces`); then no detector runs.
   * Boxes and landmarks are in each photo's file pixels.
   */
  detections?: readonly (readonly FaceGeometry[])[]
  /** The detector to use; default: MTCNN with its default options, loaded for this call. */
  detector?: FaceFinder
  /** Where the warp runs. Default `'cpu'`. */
  device?: Device
  /** libtorch threads of the warp. Default: the number of CPUs. */
  threads?: number
  /** See {@link ALIGN_MAX_PIXELS}. */
  maxPixels?: number
  /** Photos decoded, detected and warped per round (bounds memory). Default `32`. */
  batchSize?: number
  /**
   * `'error'` (default): a file that cannot be decoded rejects with a `DataError` naming
   * it. `'skip'`: it gives no rows and is listed in {@link AlignedFaces.bad}.
   */
  onBadImage?: OnBadImage
}

/** Aligned crops of a set of photos, as one batch. */
export interface AlignedFaces {
  /** N×S×S×3 uint8 RGB, row-major; row i is face `faceIndex[i]` of photo `imageIndex[i]`. */
  data: Uint8Array
  shape: [number, number, number, 3]
  /** The photo (index into the input) each row came from. */
  imageIndex: Int32Array
  /** Which of that photo's detections (index into `detections[image]`) each row is. */
  faceIndex: Int32Array
  /** Every photo's detections, in file pixels, sorted as the detector returned them. */
  detections: FaceGeometry[][]
  /** Indices of the photos in which no face was found (no rows for them). */
  noFace: number[]
  /** Files skipped with `onBadImage: 'skip'`: their index and why. */
  bad: { index: number; file: string; reason: string }[]
}

/** The checked, defaulted form of {@link AlignOptions}. */
export interface ResolvedAlign {
  size: number
  mode: AlignMode
  margin: number
  faces: FaceSelection
  device: Device
  threads: number
  maxPixels: number
  batchSize: number
}

export function resolveAlign(options: AlignOptions = {}, faces: FaceSelection = ALIGN.faces.default as FaceSelection): ResolvedAlign {
  const mode = resolveOption(ALIGN, 'mode', options, 'align mode') as AlignMode
  const size = options.size === undefined && mode === 'dlib' ? DLIB_CHIP_SIZE : resolveOption(ALIGN, 'size', options, 'align size')
  const margin = resolveOption(ALIGN, 'margin', options)
  if (!(typeof margin === 'number' && margin >= 0 && margin < size)) throw new InvalidArgumentError(`margin must be ≥ 0 and below size ${size}, got ${String(margin)}`)
  resolveOption(ALIGN, 'onBadImage', options)
  return {
    size,
    mode,
    margin,
    faces: resolveOption(ALIGN, 'faces', { faces: options.faces ?? faces }) as FaceSelection,
    device: options.device ?? 'cpu',
    threads: threadCount(options.threads, availableParallelism()),
    maxPixels: resolveOption(ALIGN, 'maxPixels', options),
    batchSize: resolveOption(ALIGN, 'batchSize', options),
  }
}

/** The options that change a crop's pixels, for cache keys. */
export function alignKey(o: ResolvedAlign): string {
  return JSON.stringify({ size: o.size, mode: o.mode, margin: o.mode === 'margin' ? o.margin : 0, faces: o.faces, maxPixels: o.maxPixels })
}

/** One photo in memory: H×W×3 uint8 RGB. */
interface Photo {
  data: Uint8Array
  height: number
  width: number
  /** Decoded pixels per file pixel, across and down. */
  scaleX: number
  scaleY: number
}

function checkFace(face: FaceGeometry, where: string): void {
  const ok =
    face &&
    Array.isArray(face.box) &&
    face.box.length === 4 &&
    Array.isArray(face.landmarks) &&
    face.landmarks.length === 5 &&
    face.landmarks.every((p) => Array.isArray(p) && p.length === 2) &&
    [...face.box, ...face.landmarks.flat()].every((v) => typeof v === 'number' && Number.isFinite(v))
  if (!ok) throw new InvalidArgumentError(`${where}: a face needs box [x1, y1, x2, y2] and 5 landmarks [x, y], all finite numbers`)
}

const area = (f: FaceGeometry): number => Math.max(0, f.box[2]! - f.box[0]!) * Math.max(0, f.box[3]! - f.box[1]!)

/** Indices of the faces to keep: all of them, or the one with the largest box (first on ties). */
export function selectFaces(faces: readonly FaceGeometry[], selection: FaceSelection): number[] {
  if (selection === 'all' || faces.length <= 1) return faces.map((_, i) => i)
  let best = 0
  faces.forEach((f, i) => {
    if (area(f) > area(faces[best]!)) best = i
  })
  return [best]
}

/** Box and landmarks of a face in decoded pixels, from file pixels (the inverse of `inFilePixels`). */
function scaled(face: FaceGeometry, sx: number, sy: number): FaceGeometry {
  if (sx === 1 && sy === 1) return face
  const [x1, y1, x2, y2] = face.box as number[]
  return { ...face, box: [x1! * sx, y1! * sy, x2! * sx, y2! * sy], landmarks: face.landmarks.map(([x, y]) => [x! * sx, y! * sy]) }
}

/** Warps the chosen faces of `photos` in one native call. */
async function warp(photos: readonly Photo[], picked: readonly { image: number; face: FaceGeometry }[], o: ResolvedAlign): Promise<Uint8Array> {
  if (picked.length === 0) return new Uint8Array(0)
  const total = photos.reduce((sum, p) => sum + p.data.length, 0)
  const pixels = new Uint8Array(total)
  const shapes = new Uint32Array(photos.length * 2)
  let at = 0
  photos.forEach((p, i) => {
    pixels.set(p.data, at)
    at += p.data.length
    shapes[2 * i] = p.height
    shapes[2 * i + 1] = p.width
  })
  const faces = new Float32Array(picked.length * 14)
  const faceImages = new Uint32Array(picked.length)
  picked.forEach(({ image, face }, i) => {
    const f = scaled(face, photos[image]!.scaleX, photos[image]!.scaleY)
    faces.set([...f.box, ...f.landmarks.flat()] as number[], i * 14)
    faceImages[i] = image
  })
  return callBinding(() =>
    binding.alignCrops(pixels, shapes, faces, faceImages, { size: o.size, mode: o.mode, margin: o.margin, device: o.device, threads: o.threads }),
  )
}

/** One round of {@link alignBatches}: photos `start..start+count−1` of the input. */
export interface AlignedRound {
  start: number
  count: number
  /** Crops of this round, rows as in {@link AlignedFaces}, `imageIndex` relative to the whole input. */
  crops: AlignedFaces
}

function photosOfBatch(images: ImageBatch): Photo[] {
  const [n, h, w, c] = images.shape
  if (c !== 3 || !(images.data instanceof Uint8Array) || images.data.length !== n * h * w * 3) {
    throw new ShapeError(`images must be N×H×W×3 uint8 (got shape [${images.shape.join(', ')}])`)
  }
  const per = h * w * 3
  return Array.from({ length: n }, (_, i) => ({ data: images.data.subarray(i * per, (i + 1) * per) as Uint8Array, height: h, width: w, scaleX: 1, scaleY: 1 }))
}

/**
 * Aligns photos round by round (`batchSize` photos each): for the CLI's progress and for
 * inputs too large to hold at once. `faceFinder` is used when `detections` are not given.
 */
export async function* alignBatches(
  images: ImageBatch | readonly string[],
  options: AlignOptions,
  faceFinder: () => Promise<FaceFinder>,
  defaultFaces: FaceSelection = 'all',
): AsyncGenerator<AlignedRound> {
  const o = resolveAlign(options, defaultFaces)
  const count = Array.isArray(images) ? images.length : (images as ImageBatch).shape[0]
  if (options.detections && options.detections.length !== count) {
    throw new InvalidArgumentError(`detections has ${options.detections.length} entries for ${count} images`)
  }
  const inMemory = Array.isArray(images) ? undefined : photosOfBatch(images as ImageBatch)
  let loaded: FaceFinder | undefined
  const detector = async (): Promise<FaceFinder> => options.detector ?? (loaded ??= await faceFinder())
  try {
    yield* rounds()
  } finally {
    loaded?.dispose?.()
  }
  async function* rounds(): AsyncGenerator<AlignedRound> {
    for (let start = 0; start < count; start += o.batchSize) {
      const n = Math.min(o.batchSize, count - start)
      const bad: AlignedFaces['bad'] = []
      const photos: Photo[] = inMemory
        ? inMemory.slice(start, start + n)
        : await Promise.all(
            (images as readonly string[]).slice(start, start + n).map(async (path, i) => {
              try {
                return await decodePhoto(path, o.maxPixels)
              } catch (error) {
                if (options.onBadImage !== 'skip' || !(error instanceof DataError)) throw error
                bad.push({ index: start + i, file: path, reason: error.message })
                return { data: new Uint8Array(3), height: 1, width: 1, scaleX: 1, scaleY: 1 }
              }
            }),
          )
      const isBad = new Set(bad.map((b) => b.index - start))
      const detections: FaceGeometry[][] = []
      for (let i = 0; i < n; i++) {
        let found = isBad.has(i) ? [] : options.detections?.[start + i]
        if (!found) {
          const p = photos[i]!
          const [faces] = await (await detector()).detect({ data: p.data, shape: [1, p.height, p.width, 3] })
          // The detector saw decoded pixels; report file pixels.
          found = (faces ?? []).map((f) => inFilePixels(f, p.scaleX, p.scaleY))
        }
        found.forEach((f, k) => checkFace(f, `image ${start + i}, face ${k}`))
        detections.push([...found])
      }
      const picked: { image: number; face: FaceGeometry; index: number }[] = []
      const noFace: number[] = []
      detections.forEach((faces, i) => {
        const keep = selectFaces(faces, o.faces)
        if (keep.length === 0 && !isBad.has(i)) noFace.push(start + i)
        for (const k of keep) picked.push({ image: i, face: faces[k]!, index: k })
      })
      const data = await warp(photos, picked, o)
      yield {
        start,
        count: n,
        crops: {
          data,
          shape: [picked.length, o.size, o.size, 3],
          imageIndex: Int32Array.from(picked, (p) => start + p.image),
          faceIndex: Int32Array.from(picked, (p) => p.index),
          detections,
          noFace,
          bad: bad.sort((a, b) => a.index - b.index),
        },
      }
    }
  }
}

/** Concatenates rounds into one {@link AlignedFaces}. */
export function joinRounds(rounds: readonly AlignedRound[], size: number): AlignedFaces {
  const rows = rounds.reduce((sum, r) => sum + r.crops.shape[0], 0)
  const data = new Uint8Array(rows * size * size * 3)
  let at = 0
  for (const r of rounds) {
    data.set(r.crops.data, at)
    at += r.crops.data.length
  }
  return {
    data,
    shape: [rows, size, size, 3],
    imageIndex: Int32Array.from(rounds.flatMap((r) => [...r.crops.imageIndex])),
    faceIndex: Int32Array.from(rounds.flatMap((r) => [...r.crops.faceIndex])),
    detections: rounds.flatMap((r) => r.crops.detections),
    noFace: rounds.flatMap((r) => r.crops.noFace),
    bad: rounds.flatMap((r) => r.crops.bad),
  }
}

/**
 * Finds the faces in photos (files, or an N×H×W×3 uint8 batch) and cuts each one out as
 * an aligned `size`×`size` crop. A photo without a face gives no rows and is listed in
 * `noFace`; a corrupt file rejects with a `DataError` naming it.
 */
export async function alignFaces(images: ImageBatch | readonly string[], options: AlignOptions = {}): Promise<AlignedFaces> {
  const o = resolveAlign(options)
  const rounds: AlignedRound[] = []
  for await (const round of alignBatches(images, options, defaultDetector(o))) rounds.push(round)
  return joinRounds(rounds, o.size)
}

/** @internal The detector loaded when none is given: MTCNN with facenet-pytorch's defaults, on the alignment's device and threads. */
export function defaultDetector(o: ResolvedAlign): () => Promise<FaceFinder> {
  return () => FaceDetector.load({ device: o.device, threads: o.threads })
}

/**
 * Writes one S×S×3 crop as a JPEG at `path`, under a temporary name renamed into place, so
 * that a file at `path` is always complete (what resuming relies on).
 */
export async function saveCrop(path: string, pixels: Uint8Array, size: number, quality = 95): Promise<void> {
  await mkdir(dirname(path), { recursive: true })
  const jpeg = await sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), { raw: { width: size, height: size, channels: 3 } })
    .jpeg({ quality })
    .toBuffer()
  // Unique per write, so that two writes in flight never share (and lose) a temporary file.
  const tmp = `${path}.tmp-${process.pid}-${++tempCount}`
  await writeFile(tmp, jpeg)
  await rename(tmp, path)
}
let tempCount = 0
