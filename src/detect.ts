/**
 * Face detection with MTCNN (P-, R-, O-Net), matched to facenet-pytorch 2.6.0's `MTCNN.detect`
 * and run by the Rust core on its own worker thread.
 */
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import type * as Native from '../index'
import { binding } from './binding'
import type { Device } from './device'
import { callBinding, DataError, DisposedError } from './errors'
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

export interface DetectOptions {
  /** Smallest face searched for, in pixels. Default 20 (facenet-pytorch's). */
  minFaceSize?: number
  /** Scale step of the image pyramid. Default 0.709. */
  factor?: number
  /** P-, R-, O-Net probability thresholds. Default `[0.6, 0.7, 0.7]`. */
  thresholds?: readonly [number, number, number]
  /**
   * Photos decoded from paths with more pixels than this are downscaled to fit before
   * detection; boxes and landmarks are mapped back to the original pixels. Default 4,000,000.
   */
  maxPixels?: number
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

const DEFAULT_MAX_PIXELS = 4_000_000

/** A loaded MTCNN; reuse it across calls and `dispose()` it when done. */
export class FaceDetector implements Disposable {
  readonly #binding: Native.BindingDetector

  private constructor(native: Native.BindingDetector) {
    this.#binding = native
  }

  static async load(options: DetectorLoadOptions = {}): Promise<FaceDetector> {
    const native = await callBinding(() =>
      binding.loadDetector(options.weights ?? MTCNN_WEIGHTS, options.device ?? 'cpu', options.threads ?? availableParallelism()),
    )
    return new FaceDetector(native)
  }

  /**
   * Faces per image of the batch, each list sorted by score, highest first. As for
   * `FaceNet.embed`, the detector's thread reads `images.data` in place: leave it
   * unchanged until the promise settles.
   */
  async detect(images: ImageBatch, options: DetectOptions = {}): Promise<DetectedFace[][]> {
    if (this.#binding.disposed) throw new DisposedError('the face detector was disposed')
    const [n, h, w] = images.shape
    const out = await callBinding(() =>
      this.#binding.detect(images.data, n, h, w, {
        minFaceSize: options.minFaceSize,
        factor: options.factor,
        thresholds: options.thresholds ? [...options.thresholds] : undefined,
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
    const result: DetectedFace[][] = []
    for (const path of paths) {
      const { data, width, height, scale } = await decodePhoto(path, options.maxPixels ?? DEFAULT_MAX_PIXELS)
      const [faces] = await this.detect({ data, shape: [1, height, width, 3] }, options)
      result.push(
        (faces ?? []).map((f) => ({
          box: f.box.map((c) => c / scale) as DetectedFace['box'],
          score: f.score,
          landmarks: f.landmarks.map(([x, y]) => [x / scale, y / scale] as [number, number]),
        })),
      )
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

async function decodePhoto(path: string, maxPixels: number): Promise<{ data: Uint8Array; width: number; height: number; scale: number }> {
  try {
    const image = sharp(path, { limitInputPixels: false }).autoOrient()
    const meta = await image.metadata()
    const w0 = meta.autoOrient?.width ?? meta.width
    const h0 = meta.autoOrient?.height ?? meta.height
    const scale = w0 * h0 > maxPixels ? Math.sqrt(maxPixels / (w0 * h0)) : 1
    const pipeline = scale < 1 ? image.resize(Math.max(1, Math.round(w0 * scale)), Math.max(1, Math.round(h0 * scale))) : image
    const { data, info } = await pipeline.toColorspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true })
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`)
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height, scale: info.width / w0 }
  } catch (error) {
    throw new DataError(path, `could not decode the image: ${(error as Error).message}`, { cause: error })
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
  const detector = await FaceDetector.load(options)
  try {
    return Array.isArray(images) ? await detector.detectFiles(images as readonly string[], options) : await detector.detect(images as ImageBatch, options)
  } finally {
    detector.dispose()
  }
}
