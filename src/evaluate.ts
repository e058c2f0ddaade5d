/**
 * Evaluation of a model: decode a pairs file's images, embed them, score the pairs with
 * the metrics of `eval/`, and write a report. `eval/` itself only computes.
 */
import sharp from 'sharp'
import { decodeImages } from './data/decode'
import type { LfwFold, LfwPairs } from './data/lfw-pairs'
import type { InputSize } from './data/preprocess'
import { embedRows, slices } from './embed-rows'
import { InvalidArgumentError, ShapeError } from './errors'
import { FirstSeen } from './first-seen'
import { l2NormalizeRows } from './eval/embeddings'
import { evaluateVerification, type IndexPair, type Pairs, type VerificationOptions, type VerificationResult } from './eval/verification'
import { normalizesEmbeddings, type FaceNet, type ImageBatch } from './model'
import { alignFaces, type AlignOptions } from './align'
import type { LossPoint, PlotOptions } from './report/plots'
import { writeReport, type ReportFiles, type ReportRow } from './report/report'
import { EVAL } from './tables/eval'
import { resolveOption } from './tables/table'

export interface EvaluateOptions extends VerificationOptions {
  /** Also embed each image's mirror and average the two embeddings. Default `false`. */
  flip?: boolean
  /** Images per `embed` call. Default `32`. */
  batchSize?: number
  /** Directory to write a report into (see {@link writeReport}). Default: no report. */
  report?: string
  /** Name of this model in the report. Default `'model'`. */
  name?: string
  /** Rows for context in the report, e.g. from {@link rawPixelEmbeddings} and an untrained network. */
  baselines?: readonly ReportRow[]
  trainingLog?: readonly LossPoint[]
  details?: Record<string, unknown>
  plot?: PlotOptions
}

export interface EvaluateResult {
  verification: VerificationResult
  /** N×embeddingDim (flip-averaged when `flip`), for identification and clustering. */
  embeddings: Float32Array
  report?: ReportFiles
}

/** Mirrors every image left–right, natively (sharp), one image at a time. */
async function mirror(batch: ImageBatch): Promise<ImageBatch> {
  const [n, height, width, channels] = batch.shape
  if (!(batch.data instanceof Uint8Array)) {
    throw new InvalidArgumentError('flip needs 8-bit images (Uint8Array); mirror float images yourself and pass embeddings')
  }
  const per = height * width * channels
  const out = new Uint8Array(batch.data.length)
  for (let i = 0; i < n; i++) {
    const img = batch.data.subarray(i * per, (i + 1) * per)
    const flopped = await sharp(img, { raw: { width, height, channels: channels as 3 } }).flop().raw().toBuffer()
    out.set(flopped, i * per)
  }
  return { data: out, shape: batch.shape }
}

/**
 * Embeds decoded images with a model and runs {@link evaluateVerification} on index pairs
 * into them; with `report`, also writes a report (baselines included).
 *
 * @param images every image the pairs refer to, at the model's input size.
 */
export async function evaluate(model: FaceNet, images: ImageBatch, pairs: Pairs, options: EvaluateOptions = {}): Promise<EvaluateResult> {
  if (!images || !Array.isArray(images.shape) || images.shape.length !== 4) {
    throw new ShapeError('images must be an ImageBatch { data, shape: [N, H, W, 3] }')
  }
  const batchSize = resolveOption(EVAL, 'batchSize', options)
  const flip = resolveOption(EVAL, 'flip', options)
  const n = images.shape[0]
  const { embeddings } = await embedRows(model, slices(images, batchSize), n)
  const flipped = flip ? (await embedRows(model, slices(await mirror(images), batchSize), n)).embeddings : undefined
  const verification = evaluateVerification({ embeddings, dim: model.embeddingDim, flipped }, pairs, options)
  let used = embeddings
  if (flipped) {
    used = new Float32Array(embeddings.length)
    for (let i = 0; i < used.length; i++) used[i] = (embeddings[i]! + flipped[i]!) / 2
    // A raw-descriptor model's threshold is on its own scale: averaging keeps it, normalizing would not.
    if (normalizesEmbeddings(model.arch)) l2NormalizeRows(used, model.embeddingDim)
  }
  const result: EvaluateResult = { verification, embeddings: used }
  if (options.report) {
    result.report = await writeReport(
      options.report,
      {
        name: resolveOption(EVAL, 'name', options),
        verification,
        baselines: options.baselines,
        details: { arch: model.arch, embeddingDim: model.embeddingDim, flip, ...options.details },
      },
      { trainingLog: options.trainingLog, plot: options.plot },
    )
  }
  return result
}

export interface PairImagesOptions {
  /** Central fraction of each image kept before resizing; match the training setting. Default `1`. */
  centerCrop?: number
  /** Only these folds (0-based). Default: all. */
  folds?: readonly number[]
  /**
   * Detect and align the largest face of each image first (see `alignFaces`), at `size`; an
   * image without a face is used whole and listed in {@link PairImages.noFace}. The center
   * crop then does not apply. Default: no alignment (the images are face crops).
   */
  align?: Omit<AlignOptions, 'faces' | 'size' | 'detections'>
}

/** The decoded images of a pairs file and its pairs as indices into them, fold by fold. */
export interface PairImages {
  images: { data: Uint8Array; shape: [number, number, number, 3] }
  /** Absolute path of each image, in image order. */
  paths: string[]
  /** One array of pairs per fold, indexing `images`. */
  pairs: IndexPair[][]
  /** With `align`: the images in which no face was found (used whole). */
  noFace: string[]
}

/**
 * Decodes every image the chosen folds of an LFW pairs file reference, once each, at
 * `size` (a model's `inputSize`), for `evaluateVerification` or a trainer's validation.
 */
export async function loadPairImages(lfw: LfwPairs, size: InputSize, options: PairImagesOptions = {}): Promise<PairImages> {
  const folds: LfwFold[] = (options.folds ?? lfw.folds.map((_, k) => k)).map((k) => lfw.folds[k]!)
  const index = new FirstSeen<string>()
  const pairs = folds.map((fold) => fold.pairs.map((p) => ({ a: index.of(p.a), b: index.of(p.b), same: p.same })))
  const paths = index.values
  if (!options.align) return { images: await decodeImages(paths, size, { centerCrop: options.centerCrop }), paths, pairs, noFace: [] }
  if (size.height !== size.width) throw new InvalidArgumentError(`aligned crops are square; this model takes ${size.height}×${size.width}`)
  const crops = await alignFaces(paths, { ...options.align, size: size.height, faces: 'largest' })
  const per = size.height * size.width * 3
  const data = new Uint8Array(paths.length * per)
  crops.imageIndex.forEach((image, row) => data.set(crops.data.subarray(row * per, (row + 1) * per), image * per))
  const noFace = crops.noFace.map((i) => paths[i]!)
  if (noFace.length > 0) {
    const whole = await decodeImages(noFace, size)
    crops.noFace.forEach((image, k) => data.set(whole.data.subarray(k * per, (k + 1) * per), image * per))
  }
  return { images: { data, shape: [paths.length, size.height, size.width, 3] }, paths, pairs, noFace }
}
