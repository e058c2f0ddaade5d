/**
 * Face detection with MTCNN (P-, R-, O-Net), matched to facenet-pytorch 2.6.0's `MTCNN.detect`
 * and run by the Rust core on its own worker thread.
 */
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import type * as Native from '../index'
import { binding } from './binding'
import { checkImageBatch, integerIn, MAX_THREADS } from './check'
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

/**
 * The accepted range of each detection option; values outside are refused with an
 * `InvalidArgumentError` (the CLI's flags use the same bounds). Each bound keeps one
 * photo's detection within a few GB and a finite time:
 * - `minFaceSize` ≥ 12, P-Net's window: smaller faces would need the photo upscaled
 *   (by 12/minFaceSize per side: 1 px means 144× the pixels);
 * - `factor` ≤ 0.95: the pyramid has log(12/side)/log(factor) levels, which grows
 *   without bound as the factor nears 1 (0.999999 is millions of levels);
 * - thresholds ≥ 0.01: at 0 every window of every level is a candidate for R- and O-Net;
 * - `maxPixels` ≤ {@link MAX_PHOTO_PIXELS}; `threads` 1 to {@link MAX_THREADS}.
 */
export const DETECT_BOUNDS = {
  minFaceSize: { min: 12, max: 100_000 },
  factor: { min: 0.1, max: 0.95 },
  threshold: { min: 0.01, max: 1 },
  maxPixels: { min: 1, max: 4096 * 4096 },
  threads: { min: 1, max: MAX_THREADS },
} as const

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

function numberIn(name: string, value: unknown, bounds: { min: number; max: number }): number {
  if (typeof value !== 'number' || !(value >= bounds.min && value <= bounds.max)) {
    throw new InvalidArgumentError(`${name} must be a number from ${bounds.min} to ${bounds.max}, got ${String(value)}`)
  }
  return value
}

/** {@link DetectOptions} checked against {@link DETECT_BOUNDS}; undefined stays undefined (the core's default). */
export function checkDetectOptions(options: DetectOptions, what = 'detect'): DetectOptions {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError(`${what}: options must be an object, got ${String(options)}`)
  const out: DetectOptions = {}
  if (options.minFaceSize !== undefined) out.minFaceSize = numberIn('minFaceSize', options.minFaceSize, DETECT_BOUNDS.minFaceSize)
  if (options.factor !== undefined) out.factor = numberIn('factor', options.factor, DETECT_BOUNDS.factor)
  if (options.thresholds !== undefined) {
    const t: unknown = options.thresholds
    if (!Array.isArray(t) || t.length !== 3) {
      throw new InvalidArgumentError(`thresholds must be three numbers (P-, R-, O-Net) such as [0.6, 0.7, 0.7], got ${t === null ? 'null' : JSON.stringify(t) ?? String(t)}`)
    }
    out.thresholds = t.map((v: unknown, i) => numberIn(`thresholds[${i}]`, v, DETECT_BOUNDS.threshold)) as [number, number, number]
  }
  if (options.maxPixels !== undefined) out.maxPixels = integerIn('maxPixels', options.maxPixels, DETECT_BOUNDS.maxPixels.min, DETECT_BOUNDS.maxPixels.max)
  return out
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
