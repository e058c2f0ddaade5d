import sharp from 'sharp'
import { InvalidArgumentError, ShapeError } from '../errors'
import type { FaceNet, ImageBatch } from '../model'
import type { LossPoint, PlotOptions } from '../report/plots'
import { writeReport, type ReportFiles, type ReportRow } from '../report/report'
import { l2NormalizeRows } from './embeddings'
import { evaluateVerification, type Pairs, type VerificationOptions, type VerificationResult } from './verification'

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

async function embedAll(model: FaceNet, images: ImageBatch, batchSize: number): Promise<Float32Array> {
  const [n, height, width, channels] = images.shape
  const per = height * width * channels
  const out = new Float32Array(n * model.embeddingDim)
  for (let start = 0; start < n; start += batchSize) {
    const count = Math.min(batchSize, n - start)
    const data = images.data.subarray(start * per, (start + count) * per)
    out.set(await model.embed({ data, shape: [count, height, width, channels] }), start * model.embeddingDim)
  }
  return out
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
  const batchSize = options.batchSize ?? 32
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be a positive integer, got ${String(batchSize)}`)
  const embeddings = await embedAll(model, images, batchSize)
  const flipped = options.flip ? await embedAll(model, await mirror(images), batchSize) : undefined
  const verification = evaluateVerification({ embeddings, dim: model.embeddingDim, flipped }, pairs, options)
  let used = embeddings
  if (flipped) {
    used = new Float32Array(embeddings.length)
    for (let i = 0; i < used.length; i++) used[i] = (embeddings[i]! + flipped[i]!) / 2
    l2NormalizeRows(used, model.embeddingDim)
  }
  const result: EvaluateResult = { verification, embeddings: used }
  if (options.report) {
    result.report = await writeReport(
      options.report,
      {
        name: options.name ?? 'model',
        verification,
        baselines: options.baselines,
        details: { arch: model.arch, embeddingDim: model.embeddingDim, flip: options.flip ?? false, ...options.details },
      },
      { trainingLog: options.trainingLog, plot: options.plot },
    )
  }
  return result
}
