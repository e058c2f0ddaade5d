import { InvalidArgumentError, ShapeError } from '../errors'
import { METRICS, quotedList, type Metric } from '../options'

export type { Metric }

/**
 * N embeddings of `dim` values each, row-major (what {@link FaceNet.embed} returns).
 * `flipped` holds the embeddings of the mirrored images, row for row; when present they
 * are averaged with `embeddings` and the mean is renormalized.
 */
export interface Embeddings {
  embeddings: Float32Array | Float64Array
  dim: number
  flipped?: Float32Array | Float64Array
}

export function checkEmbeddings(input: Embeddings): number {
  const { embeddings, dim } = input
  if (!(embeddings instanceof Float32Array || embeddings instanceof Float64Array)) {
    throw new InvalidArgumentError('embeddings must be a Float32Array or a Float64Array')
  }
  if (!Number.isInteger(dim) || dim < 1) throw new InvalidArgumentError(`dim must be a positive integer, got ${String(dim)}`)
  if (embeddings.length % dim !== 0) {
    throw new ShapeError(`embeddings hold ${embeddings.length} values, not a whole number of rows of ${dim}`)
  }
  if (input.flipped !== undefined && input.flipped.length !== embeddings.length) {
    throw new ShapeError(`flipped embeddings hold ${input.flipped.length} values, expected ${embeddings.length}`)
  }
  return embeddings.length / dim
}

/** Scales every row to unit L2 norm in place (rows of zeros stay zero). */
export function l2NormalizeRows(data: Float32Array | Float64Array, dim: number): void {
  const rows = data.length / dim
  for (let r = 0; r < rows; r++) {
    const row = data.subarray(r * dim, (r + 1) * dim)
    let sum = 0
    for (let i = 0; i < dim; i++) sum += row[i]! * row[i]!
    if (sum > 0) {
      const inv = 1 / Math.sqrt(sum)
      for (let i = 0; i < dim; i++) row[i]! *= inv
    }
  }
}

/**
 * The embeddings to evaluate: `embeddings` as given, or, with `flipped`, the renormalized
 * mean of each image's and its mirror's embedding (the usual test-time augmentation).
 */
export function resolveEmbeddings(input: Embeddings): Float32Array | Float64Array {
  checkEmbeddings(input)
  if (!input.flipped) return input.embeddings
  const out = new Float64Array(input.embeddings.length)
  const { embeddings, flipped } = input
  for (let i = 0; i < out.length; i++) out[i] = (embeddings[i]! + flipped[i]!) / 2
  l2NormalizeRows(out, input.dim)
  return out
}

/**
 * Squared Euclidean distance for `'l2'` (0..4 for unit vectors, as in the paper) and
 * 1 − cosine similarity for `'cosine'` (0..2). Smaller means more alike.
 */
export function distance(data: ArrayLike<number>, dim: number, a: number, b: number, metric: Metric): number {
  const oa = a * dim
  const ob = b * dim
  if (metric === 'l2') {
    let sum = 0
    for (let i = 0; i < dim; i++) {
      const d = data[oa + i]! - data[ob + i]!
      sum += d * d
    }
    return sum
  }
  let dot = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < dim; i++) {
    const x = data[oa + i]!
    const y = data[ob + i]!
    dot += x * y
    na += x * x
    nb += y * y
  }
  const denom = Math.sqrt(na * nb)
  return denom > 0 ? 1 - dot / denom : 1
}

export function checkMetric(metric: unknown): Metric {
  if (!METRICS.includes(metric as Metric)) {
    throw new InvalidArgumentError(`metric must be ${quotedList(METRICS)}, got ${JSON.stringify(metric)}`)
  }
  return metric as Metric
}

/**
 * The raw-pixel baseline: every image flattened to a vector and scaled to unit L2 norm,
 * so that pair distances on these rows compare images pixel by pixel.
 *
 * @param pixels N images, any layout, as long as every image is `shape[1..]` contiguous values.
 * @param shape `[N, ...]`, e.g. `[N, H, W, 3]`.
 * @returns `{ embeddings, dim }`, ready for {@link evaluateVerification}.
 */
export function rawPixelEmbeddings(
  pixels: Uint8Array | Float32Array | Float64Array,
  shape: readonly number[],
): Embeddings & { embeddings: Float32Array } {
  if (shape.length < 2 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new ShapeError(`shape must be [N, ...] with positive integers, got ${JSON.stringify(shape)}`)
  }
  const count = shape[0]!
  const dim = shape.slice(1).reduce((p, d) => p * d, 1)
  if (pixels.length !== count * dim) {
    throw new ShapeError(`pixels hold ${pixels.length} values, shape [${shape.join(', ')}] needs ${count * dim}`)
  }
  const embeddings = Float32Array.from(pixels)
  l2NormalizeRows(embeddings, dim)
  return { embeddings, dim }
}
