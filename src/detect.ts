/**
 * Face detection with MTCNN (P-, R-, O-Net), matched to facenet-pytorch 2.6.0's `MTCNN.detect`
 * and run by the Rust core on its own worker thread.
 */
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import type * as Native from '../index'
import { binding } from './binding'
import { checkImageBatch } from './check'
import { DETECT, DETECT_BOUNDS } from './tables/detect'
import { resolveOption } from './tables/table'
import { decodePhoto, MAX_PHOTO_PIXELS } from './data/preprocess'
import type { Device } from './device'
import { callBinding, checkKeys, DisposedError, InvalidArgumentError } from './errors'
import type { ImageBatch } from './model'

/** One detected face, in the input image's pixel coordinates. */
export interface DetectedFace {
  /** `[x1, y1, x2, y2]`. */
  box: [number, number, number, number]
  /** O-Net face probability. */
  score: number
  /** Left eye, right eye, nose, mouth left, mouth right, each `[x, y]`. */
  landmarks: [number, number][]
}

export { DETECT_BOUNDS } from './tables/detect'

export interface DetectOptions {
  /** Smallest face searched for, in pixels, 12 or more (P-Net's window). Default 20 (facenet-pytorch's). */
  minFaceSize?: number
  /** Scale step of the image pyramid, 0.1 to 0.95. Default 0.709. */
  factor?: number
  /** P-, R-, O-Net probability thresholds, each 0.01 to 1. Default `[0.6, 0.7, 0.7]`. */
  thresholds?: readonly [number, number, number]
  /**
   * Photos decoded from paths with more pixels than this are downscaled to fit before
   * detection; boxes and landmarks are mapped back to the original pixels. Default and
   * most: {@link MAX_PHOTO_PIXELS} (4096 × 4096), the limit `alignFaces` uses too, so
   * a photo gets the same boxes from both.
   */
  maxPixels?: number
}

const DETECT_KEYS = ['minFaceSize', 'factor', 'thresholds', 'maxPixels'] as const
const LOAD_KEYS = ['device', 'threads', 'weights'] as const

/** {@link DetectOptions} checked, and filled in from the detect table. */
export function checkDetectOptions(options: DetectOptions, what = 'detect'): Required<DetectOptions> {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError(`${what}: options must be an object, got ${String(options)}`)
  return {
    minFaceSize: resolveOption(DETECT, 'minFaceSize', options),
    factor: resolveOption(DETECT, 'factor', options),
    thresholds: resolveOption(DETECT, 'thresholds', options) as [number, number, number],
    maxPixels: resolveOption(DETECT, 'maxPixels', options),
  }
}

export interface DetectorLoadOptions {
  /** Default `'cpu'`. */
  device?: Device
  /** libtorch threads of the detector's worker. Default: all cores. */
  threads?: number
  /** A safetensors file with `pnet.*`, `rnet.*`, `onet.*`. Default: the shipped `weights/mtcnn/mtcnn.safetensors`. */
  weights?: string
}

/** Where the package ships facenet-pytorch's MTCNN weights. */
export const MTCNN_WEIGHTS = join(__dirname, '..', 'weights', 'mtcnn', 'mtcnn.safetensors')

/** A loaded MTCNN; reuse it across calls and `dispose()` it when done. */
export class FaceDetector implements Disposable {
  readonly #binding: Native.BindingDetector

  private constructor(native: Native.BindingDetector) {
    this.#binding = native
  }

  static async load(options: DetectorLoadOptions = {}): Promise<FaceDetector> {
    checkKeys('FaceDetector.load', options, LOAD_KEYS)
    // The binding checks threads (1 to MAX_THREADS) for every worker, with one message.
    const threads = options.threads ?? Math.min(availableParallelism(), DETECT_BOUNDS.threads.max)
    const weights = options.weights ?? MTCNN_WEIGHTS
    if (typeof weights !== 'string' || weights.length === 0) throw new InvalidArgumentError(`weights must be a file path, got ${String(weights)}`)
    const native = await callBinding(() => binding.loadDetector(weights, options.device ?? 'cpu', threads))
    return new FaceDetector(native)
  }

  /**
   * Faces per image of the batch, each list sorted by score, highest first. As for
   * `FaceNet.embed`, the detector's thread reads `images.data` in place: leave it
   * unchanged until the promise settles.
   */
  async detect(images: ImageBatch, options: DetectOptions = {}): Promise<DetectedFace[][]> {
    if (this.#binding.disposed) throw new DisposedError('the face detector was disposed')
    const { data, shape } = checkImageBatch(images)
    checkKeys('detect', options ?? {}, DETECT_KEYS)
    const o = checkDetectOptions(options ?? {})
    const [n, h, w] = shape
    const out = await callBinding(() =>
      this.#binding.detect(data, n, h, w, {
        minFaceSize: o.minFaceSize,
        factor: o.factor,
        thresholds: o.thresholds ? [...o.thresholds] : undefined,
      }),
    )
    const result: DetectedFace[][] = []
    let at = 0
    for (const count of out.counts) {
      const faces: DetectedFace[] = []
      for (let k = 0; k < count; k++, at += 15) {
        const v = out.values
        const landmarks: [number, number][] = []
        for (let p = 0; p < 5; p++) landmarks.push([v[at + 5 + 2 * p]!, v[at + 6 + 2 * p]!])
        faces.push({ box: [v[at]!, v[at + 1]!, v[at + 2]!, v[at + 3]!], score: v[at + 4]!, landmarks })
      }
      result.push(faces)
    }
    return result
  }

  /** Decodes each photo with sharp (any colour space, alpha dropped, EXIF-oriented) and detects. */
  async detectFiles(paths: readonly string[], options: DetectOptions = {}): Promise<DetectedFace[][]> {
    if (!Array.isArray(paths) || !paths.every((p) => typeof p === 'string')) throw new InvalidArgumentError('paths must be an array of file paths')
    checkKeys('detectFiles', options ?? {}, DETECT_KEYS)
    const o = checkDetectOptions(options ?? {})
    const result: DetectedFace[][] = []
    for (const path of paths) {
      // alignFaces' decoder and pixel limit, so both report the same boxes for a photo.
      const photo = await decodePhoto(path, o.maxPixels ?? MAX_PHOTO_PIXELS)
      const [faces] = await this.detect({ data: photo.data, shape: [1, photo.height, photo.width, 3] }, o)
      result.push((faces ?? []).map((f) => inFilePixels(f, photo.scaleX, photo.scaleY)))
    }
    return result
  }

  dispose(): void {
    this.#binding.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }
}

/**
 * A face found in a decoded photo, in the file's pixels. Each axis has its own scale: the
 * downscaled sides are rounded to whole pixels separately. `alignFaces` maps back with
 * this too, so both report the same numbers.
 */
export function inFilePixels<F extends { box: readonly number[]; landmarks: readonly (readonly number[])[] }>(face: F, scaleX: number, scaleY: number): F {
  if (scaleX === 1 && scaleY === 1) return face
  const [x1, y1, x2, y2] = face.box as [number, number, number, number]
  return {
    ...face,
    box: [x1 / scaleX, y1 / scaleY, x2 / scaleX, y2 / scaleY],
    landmarks: face.landmarks.map(([x, y]) => [x! / scaleX, y! / scaleY]),
  }
}

/**
 * Detects faces in a batch or in photo files (one detector for the call, disposed after).
 * No face is an empty list, not an error.
 */
export async function detectFaces(
  images: ImageBatch | readonly string[],
  options: DetectOptions & DetectorLoadOptions = {},
): Promise<DetectedFace[][]> {
  checkKeys('detectFaces', options ?? {}, [...DETECT_KEYS, ...LOAD_KEYS])
  const { device, threads, weights, ...detect } = options ?? {}
  // Checked before the detector is loaded: a bad option costs no load.
  checkDetectOptions(detect)
  const detector = await FaceDetector.load({ ...(device === undefined ? {} : { device }), ...(threads === undefined ? {} : { threads }), ...(weights === undefined ? {} : { weights }) })
  try {
    return Array.isArray(images) ? await detector.detectFiles(images as readonly string[], detect) : await detector.detect(images as ImageBatch, detect)
  } finally {
    detector.dispose()
  }
}
