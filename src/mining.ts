import { availableParallelism } from 'node:os'
import { binding } from './binding'
import { integerIn } from './check'
import { callBinding, InvalidArgumentError, ShapeError } from './errors'
import { LOSS } from './tables/loss'
import { MINING } from './tables/mining'
import { resolveOption } from './tables/table'
import { TRAINING } from './tables/training'
import {
  type DistanceName,
  type Fallback,
  type MinerName,
  type MiningMode,
  type NegativeChoice,
  type Reducer,
} from './options'

export type { DistanceName, MinerName } from './options'

export interface MineOptions {
  /**
   * - `'semi-hard'` (default): the paper's online mining; every anchor-positive pair with
   *   a negative d(a,p) < d(a,n) < d(a,p) + margin.
   * - `'batch-hard'`: per anchor, the farthest positive and the nearest negative.
   * - `'batch-all'`: every valid triplet with a positive loss.
   * - `'hard'`: every valid triplet with d(a,n) < d(a,p).
   * - `'random'`: every anchor-positive pair with a random negative.
   */
  miner?: MinerName
  /**
   * `'online'` (default): the embeddings are one batch, compared all with all (N×N).
   * `'epoch'`: they are a whole data set, mined `chunk` anchors at a time (memory chunk × N
   * instead of N × N): the notebook's per-epoch triplet list. Semi-hard only.
   */
  mining?: MiningMode
  /** α. Default `0.2` (the paper). Also the margin of `stats.activeFraction`. */
  margin?: number
  /** Semi-hard: which qualifying negative to take. Default `'random'`. */
  choice?: NegativeChoice
  /**
   * Semi-hard: what to do with a pair with no semi-hard negative. Default
   * `'nearest-farther-else-farthest'` (TensorFlow Addons' rule).
   */
  fallback?: Fallback
  /** Default `'squared-l2'`. */
  distance?: DistanceName
  /** Seed of the random choices; the same seed gives the same triplets. Default `0`. */
  seed?: number
  /** Anchors per step of `'epoch'` mining. Default `1024`. */
  chunk?: number
  /** libtorch threads for the call. Default: the number of CPUs. */
  threads?: number
}

/** Index triplets into the embeddings, one entry per triplet in each array. */
export interface Triplets {
  anchors: Int32Array
  positives: Int32Array
  negatives: Int32Array
}

export interface MiningStats {
  /** Ordered pairs of distinct embeddings with the same label. */
  anchorPositivePairs: number
  triplets: number
  /** Fraction of the mined triplets with d(a,p) − d(a,n) + margin > 0. */
  activeFraction: number
  /** Mean d(a,p) and d(a,n) over the mined triplets (0 when there are none). */
  meanAp: number
  meanAn: number
  /** Fraction of anchor-positive pairs with no semi-hard negative. */
  noSemiHardFraction: number
}

export interface MinedTriplets extends Triplets {
  stats: MiningStats
}

export interface TripletLossOptions {
  /** α. Default `0.2`. */
  margin?: number
  /** `'mean'` (default) over all triplets, or `'mean-active'` over those with a positive loss. */
  reducer?: Reducer
  /** L2-normalize the embeddings first. Default `true`, as in the paper. */
  normalize?: boolean
  /** Default `'squared-l2'`. */
  distance?: DistanceName
  /** libtorch threads for the call. Default: the number of CPUs. */
  threads?: number
}

export interface TripletLossResult {
  loss: number
  /** Triplets with a positive hinge. */
  activeTriplets: number
  /** d loss / d embeddings, the same layout as the embeddings (N×d row-major). */
  gradient: Float32Array
}

function checkEmbeddings(embeddings: Float32Array, count: number): number {
  if (!(embeddings instanceof Float32Array)) {
    throw new InvalidArgumentError('embeddings must be a Float32Array (N×d, row-major)')
  }
  if (count === 0) {
    if (embeddings.length !== 0) throw new ShapeError('embeddings must be empty when there are no labels')
    return 1
  }
  if (embeddings.length === 0 || embeddings.length % count !== 0) {
    throw new ShapeError(`embeddings hold ${embeddings.length} values, which is not a whole number of rows for ${count} labels`)
  }
  return embeddings.length / count
}

/** Mining options as the binding takes them: every value checked. */
export type CheckedMineOptions = Parameters<typeof binding.mineTriplets>[3]

/**
 * Mines (anchor, positive, negative) index triplets from N embeddings (a row-major N×d
 * `Float32Array`; d is its length / N) and their N integer labels. Runs off the event loop.
 */
export async function mineTriplets(
  embeddings: Float32Array,
  labels: Int32Array | readonly number[],
  options: MineOptions = {},
): Promise<MinedTriplets> {
  const labelArray = labels instanceof Int32Array ? labels : Int32Array.from(checkLabels(labels))
  const dim = checkEmbeddings(embeddings, labelArray.length)
  const mining = resolveOption(MINING, 'mining', options)
  const checked: CheckedMineOptions = {
    miner: resolveOption(MINING, 'miner', options),
    margin: resolveOption(MINING, 'margin', options),
    choice: resolveOption(MINING, 'choice', options) as NegativeChoice,
    fallback: resolveOption(MINING, 'fallback', options) as Fallback,
    distance: resolveOption(MINING, 'distance', options) as DistanceName,
    seed: resolveOption(TRAINING, 'seed', options),
  }
  const chunk = resolveOption(MINING, 'chunk', options)
  const threads = integerIn('threads', options.threads ?? availableParallelism(), 1, 1024)
  return mineChecked(embeddings, labelArray, dim, checked, threads, mining === 'epoch' ? chunk : undefined)
}

/** {@link mineTriplets} on values already checked; `epochChunk` mines a whole set that many anchors at a time. */
export async function mineChecked(
  embeddings: Float32Array,
  labels: Int32Array,
  dim: number,
  options: CheckedMineOptions,
  threads: number,
  epochChunk: number | undefined,
): Promise<MinedTriplets> {
  const mined = await callBinding(() => Promise.resolve().then(() => binding.mineTriplets(embeddings, labels, dim, options, threads, epochChunk)))
  const t = mined.triplets.length / 3
  return {
    anchors: mined.triplets.subarray(0, t),
    positives: mined.triplets.subarray(t, 2 * t),
    negatives: mined.triplets.subarray(2 * t),
    stats: { ...mined.stats },
  }
}

function checkLabels(labels: readonly number[]): readonly number[] {
  if (!Array.isArray(labels)) throw new InvalidArgumentError('labels must be an Int32Array or an array of integers')
  for (const label of labels) {
    if (!Number.isInteger(label) || label < -0x80000000 || label > 0x7fffffff) {
      throw new InvalidArgumentError(`labels must be 32-bit integers, got ${String(label)}`)
    }
  }
  return labels
}

/**
 * The triplet loss, max(0, d(a,p) − d(a,n) + margin) per triplet, reduced, with its
 * gradient with respect to the embeddings (N×`dim`, row-major) for a loop of your own.
 */
export async function tripletLoss(
  embeddings: Float32Array,
  dim: number,
  triplets: Triplets,
  options: TripletLossOptions = {},
): Promise<TripletLossResult> {
  integerIn('dim', dim, 1, 1 << 20)
  if (!(embeddings instanceof Float32Array)) {
    throw new InvalidArgumentError('embeddings must be a Float32Array (N×d, row-major)')
  }
  if (embeddings.length % dim !== 0) {
    throw new ShapeError(`embeddings hold ${embeddings.length} values, not a whole number of ${dim}-wide rows`)
  }
  const { anchors, positives, negatives } = triplets ?? ({} as Triplets)
  for (const [name, array] of [['anchors', anchors], ['positives', positives], ['negatives', negatives]] as const) {
    if (!(array instanceof Int32Array)) throw new InvalidArgumentError(`triplets.${name} must be an Int32Array`)
  }
  if (positives.length !== anchors.length || negatives.length !== anchors.length) {
    throw new ShapeError(
      `triplets.anchors, positives and negatives must have one length, got ${anchors.length}, ${positives.length}, ${negatives.length}`,
    )
  }
  const flat = new Int32Array(anchors.length * 3)
  flat.set(anchors, 0)
  flat.set(positives, anchors.length)
  flat.set(negatives, 2 * anchors.length)
  const bindingOptions = {
    margin: resolveOption(MINING, 'margin', options),
    reducer: resolveOption(LOSS, 'reducer', options) as Reducer,
    normalize: resolveOption(LOSS, 'normalize', options),
    distance: resolveOption(MINING, 'distance', options) as DistanceName,
    threads: integerIn('threads', options.threads ?? availableParallelism(), 1, 1024),
  }
  const count = embeddings.length / dim
  const out = await callBinding(() =>
    Promise.resolve().then(() => binding.tripletLoss(embeddings, count, dim, flat, bindingOptions)),
  )
  return { loss: out.loss, activeTriplets: out.active, gradient: out.gradient }
}
