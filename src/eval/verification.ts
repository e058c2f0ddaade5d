import { InvalidArgumentError, ShapeError } from '../errors'
import { EVAL } from '../tables/eval'
import { resolveOption } from '../tables/table'
import { checkEmbeddings, checkMetric, distance, resolveEmbeddings, type Embeddings, type Metric } from './embeddings'
import { equalErrorRate, rocCurve, trapezoid, type Roc } from './roc'

/** A labelled pair of rows of an embedding matrix. */
export interface IndexPair {
  a: number
  b: number
  same: boolean
}

/** Pair distances computed elsewhere, with their labels. */
export interface PairDistances {
  distances: ArrayLike<number>
  same: ArrayLike<boolean | number>
}

/**
 * Pairs, flat (split into `folds` contiguous folds, like LFW's pairs.txt read in order)
 * or already split into folds.
 */
export type Pairs = readonly IndexPair[] | readonly (readonly IndexPair[])[]

/**
 * Candidate thresholds. `'exact'`: every threshold that changes a decision on the training
 * folds (midpoints between their distinct distances), so the chosen one is a true optimum.
 * `'lfw'`: the grids of the standard LFW evaluation code (facenet's `lfw.evaluate`): 0..4
 * step 0.01 for accuracy and step 0.001 for VAL. Or an explicit ascending list.
 */
export type ThresholdGrid = 'exact' | 'lfw' | readonly number[]

export interface VerificationOptions {
  /** Distance between embeddings. Default `'l2'` (squared Euclidean). Ignored for distances. */
  metric?: Metric
  /** Folds for flat pairs. Default `10` (LFW View 2). */
  folds?: number
  /** False accept rate for VAL@FAR. Default `1e-3`. */
  farTarget?: number
  /** Default `'exact'`. */
  thresholds?: ThresholdGrid
  /** Keep collinear ROC points (scikit-learn's `drop_intermediate=False`). Default `false`. */
  fullRoc?: boolean
}

export interface MeanStd {
  mean: number
  /** Population standard deviation over folds (numpy's `np.std`, as the LFW code reports). */
  std: number
  perFold: number[]
}

export interface VerificationResult {
  metric: Metric | 'precomputed'
  pairCount: number
  sameCount: number
  differentCount: number
  folds: number
  /** Accuracy on each fold at the threshold that was best on the other folds. */
  accuracy: MeanStd
  /** Threshold chosen for each fold (on the other folds). */
  foldThresholds: number[]
  /** Validation rate (TPR) at the threshold where FAR on the other folds is `farTarget`. */
  val: MeanStd & { farTarget: number }
  /** The FAR actually reached on each test fold at the VAL threshold. */
  far: MeanStd
  auc: number
  /** Equal error rate and the distance threshold where it occurs. */
  eer: number
  eerThreshold: number
  /**
   * Best-accuracy threshold on all pairs (pairs with a distance below it are "same"): the
   * value to store with a model for `compare`.
   */
  threshold: number
  /** Accuracy on all pairs at {@link threshold} (optimistic: chosen on the same pairs). */
  thresholdAccuracy: number
  roc: Roc
  /** Every pair's distance, in pair order, for histograms. */
  distances: Float64Array
  same: Uint8Array
}

const LFW_ACCURACY_GRID = arange(0, 4, 0.01)
const LFW_VAL_GRID = arange(0, 4, 0.001)

/** numpy's `arange` for a float step: start + i·step, ceil((stop − start)/step) values. */
export function arange(start: number, stop: number, step: number): number[] {
  const n = Math.max(0, Math.ceil((stop - start) / step))
  const out = new Array<number>(n)
  for (let i = 0; i < n; i++) out[i] = start + i * step
  return out
}

/**
 * scipy's `interp1d(x, y, kind='slinear')(target)` for strictly increasing x: linear
 * interpolation, evaluated the way scipy's degree-1 B-spline does. Returns NaN where scipy
 * would raise (x not strictly increasing, or target outside [x₀, xₙ₋₁]).
 */
export function interp1dSlinear(x: readonly number[], y: readonly number[], target: number): number {
  const m = x.length
  if (m < 2 || m !== y.length || !(target >= x[0]!) || !(target <= x[m - 1]!)) return NaN
  for (let i = 1; i < m; i++) if (!(x[i]! > x[i - 1]!)) return NaN
  // scipy's find_interval on knots [x₀, x₀, x₁, …, xₙ₋₁, xₙ₋₁]: the last interval starting at or below target.
  let l = 0
  while (l + 2 < m && target >= x[l + 1]!) l++
  const xa = x[l]!
  const xb = x[l + 1]!
  // The same floating-point steps as scipy's de Boor evaluation, so results agree bit for bit.
  const w = 1 / (xb - xa)
  return y[l]! * (w * (xb - target)) + y[l + 1]! * (w * (target - xa))
}

function meanStd(values: number[]): MeanStd {
  const mean = values.reduce((s, v) => s + v, 0) / values.length
  const variance = values.reduce((s, v) => s + (v - mean) * (v - mean), 0) / values.length
  return { mean, std: Math.sqrt(variance), perFold: values }
}

/** Distances and labels of `indices`, sorted by distance. */
interface SortedSet {
  d: Float64Array
  same: Uint8Array
  nSame: number
  nDiff: number
}

function sortedSet(distances: Float64Array, same: Uint8Array, indices: readonly number[]): SortedSet {
  const idx = Uint32Array.from(indices).sort((x, y) => distances[x]! - distances[y]! || x - y)
  const d = new Float64Array(idx.length)
  const s = new Uint8Array(idx.length)
  let nSame = 0
  for (let i = 0; i < idx.length; i++) {
    d[i] = distances[idx[i]!]!
    s[i] = same[idx[i]!]!
    nSame += s[i]!
  }
  return { d, same: s, nSame, nDiff: idx.length - nSame }
}

/** Thresholds between each pair of neighbouring distinct distances, plus one below and one above all. */
function exactCandidates(set: SortedSet): number[] {
  const { d } = set
  if (d.length === 0) return [0]
  const out = [d[0]!]
  for (let i = 1; i < d.length; i++) if (d[i] !== d[i - 1]) out.push((d[i - 1]! + d[i]!) / 2)
  const last = d[d.length - 1]!
  out.push(last + Math.max(1, Math.abs(last)))
  return out
}

/**
 * For each ascending threshold, the counts of same and different pairs with distance
 * strictly below it (the LFW code's `np.less(dist, threshold)`).
 */
function countsBelow(set: SortedSet, thresholds: readonly number[]): { tp: Int32Array; fp: Int32Array } {
  const tp = new Int32Array(thresholds.length)
  const fp = new Int32Array(thresholds.length)
  let i = 0
  let sameSeen = 0
  for (let k = 0; k < thresholds.length; k++) {
    const t = thresholds[k]!
    while (i < set.d.length && set.d[i]! < t) {
      sameSeen += set.same[i]!
      i++
    }
    tp[k] = sameSeen
    fp[k] = i - sameSeen
  }
  return { tp, fp }
}

function bestAccuracyThreshold(set: SortedSet, thresholds: readonly number[]): { threshold: number; accuracy: number } {
  const { tp, fp } = countsBelow(set, thresholds)
  const n = set.d.length
  let best = -1
  let bestCorrect = -1
  for (let k = 0; k < thresholds.length; k++) {
    const correct = tp[k]! + (set.nDiff - fp[k]!)
    if (correct > bestCorrect) {
      bestCorrect = correct
      best = k
    }
  }
  return { threshold: thresholds[best]!, accuracy: n ? bestCorrect / n : NaN }
}

function accuracyAt(set: SortedSet, threshold: number): number {
  const { tp, fp } = countsBelow(set, [threshold])
  return set.d.length ? (tp[0]! + set.nDiff - fp[0]!) / set.d.length : NaN
}

function valFarAt(set: SortedSet, threshold: number): { val: number; far: number } {
  const { tp, fp } = countsBelow(set, [threshold])
  // The LFW code divides without a guard; a fold without same or different pairs gives NaN there too.
  return { val: tp[0]! / set.nSame, far: fp[0]! / set.nDiff }
}

function valThreshold(set: SortedSet, thresholds: readonly number[], farTarget: number): number {
  const { fp } = countsBelow(set, thresholds)
  const far = Array.from(fp, (v) => v / set.nDiff)
  let maxFar = -Infinity
  for (const f of far) if (f > maxFar) maxFar = f
  if (!(maxFar >= farTarget)) return 0
  // The standard code hands every (FAR, threshold) point to interp1d, which current scipy
  // rejects when FAR values repeat (they always do: FAR is a step function of the
  // threshold). Like the maintained ports, keep the first threshold of each distinct FAR.
  const x: number[] = []
  const y: number[] = []
  for (let k = 0; k < far.length; k++) {
    if (x.length === 0 || far[k]! > x[x.length - 1]!) {
      x.push(far[k]!)
      y.push(thresholds[k]!)
    }
  }
  const t = interp1dSlinear(x, y, farTarget)
  return Number.isNaN(t) ? 0 : t
}

function splitFolds(pairs: Pairs, folds: number): { flat: readonly IndexPair[]; foldIndices: number[][] } {
  if (pairs.length > 0 && Array.isArray(pairs[0])) {
    const nested = pairs as readonly (readonly IndexPair[])[]
    const flat: IndexPair[] = []
    const foldIndices = nested.map((fold) => fold.map((p) => flat.push(p) - 1))
    return { flat, foldIndices }
  }
  const flat = pairs as readonly IndexPair[]
  return { flat, foldIndices: kFold(flat.length, folds) }
}

/** scikit-learn's `KFold(n_splits, shuffle=False)`: contiguous folds, the first n mod k one longer. */
export function kFold(n: number, folds: number): number[][] {
  if (!Number.isInteger(folds) || folds < 2 || folds > n) {
    throw new InvalidArgumentError(`folds must be an integer from 2 to the number of pairs (${n}), got ${String(folds)}`)
  }
  const out: number[][] = []
  let start = 0
  for (let f = 0; f < folds; f++) {
    const size = Math.floor(n / folds) + (f < n % folds ? 1 : 0)
    out.push(Array.from({ length: size }, (_, i) => start + i))
    start += size
  }
  return out
}

/**
 * Face verification on labelled pairs, with the LFW protocol: for each fold, the
 * threshold with the best accuracy on the other folds is applied to it, and accuracy is
 * reported as mean ± std over folds; VAL@FAR is computed the way the standard LFW
 * evaluation code does (threshold where the training folds' FAR equals the target, by
 * linear interpolation of threshold against FAR over the first threshold of each distinct
 * FAR, else 0). Also AUC, EER, the ROC, and the best
 * threshold on all pairs.
 *
 * @param input embeddings (with optional mirrored-image embeddings) and index pairs, or
 *   precomputed distances with their labels (then `pairs` only gives folds and may be omitted).
 */
export function evaluateVerification(
  input: Embeddings | PairDistances,
  pairs?: Pairs,
  options: VerificationOptions = {},
): VerificationResult {
  const folds = resolveOption(EVAL, 'folds', options)
  const farTarget = resolveOption(EVAL, 'farTarget', options)
  const grid = options.thresholds ?? 'exact'
  if (grid !== 'exact' && grid !== 'lfw') {
    if (!Array.isArray(grid) || grid.length === 0 || grid.some((t, i) => !Number.isFinite(t) || (i > 0 && t < grid[i - 1]!))) {
      throw new InvalidArgumentError("thresholds must be 'exact', 'lfw' or a non-empty ascending list of finite numbers")
    }
  }

  let distances: Float64Array
  let same: Uint8Array
  let foldIndices: number[][]
  let metric: Metric | 'precomputed'
  if ('distances' in input) {
    metric = 'precomputed'
    distances = Float64Array.from(input.distances)
    if (input.same.length !== distances.length) {
      throw new ShapeError(`same has ${input.same.length} labels for ${distances.length} distances`)
    }
    same = Uint8Array.from(input.same as ArrayLike<number>, (v) => (v ? 1 : 0))
    foldIndices = pairs ? splitFolds(pairs, folds).foldIndices : kFold(distances.length, folds)
    if (foldIndices.reduce((s, f) => s + f.length, 0) !== distances.length) {
      throw new ShapeError(`the folds hold a different number of pairs than the ${distances.length} distances`)
    }
  } else {
    metric = checkMetric(resolveOption(EVAL, 'metric', options))
    if (!pairs) throw new InvalidArgumentError('pairs are required with embeddings')
    const rows = checkEmbeddings(input)
    const data = resolveEmbeddings(input)
    const split = splitFolds(pairs, folds)
    foldIndices = split.foldIndices
    distances = new Float64Array(split.flat.length)
    same = new Uint8Array(split.flat.length)
    split.flat.forEach((p, i) => {
      if (!Number.isInteger(p.a) || !Number.isInteger(p.b) || p.a < 0 || p.b < 0 || p.a >= rows || p.b >= rows) {
        throw new InvalidArgumentError(`pair ${i} refers to rows ${p.a} and ${p.b}, but there are ${rows} embeddings`)
      }
      distances[i] = distance(data, input.dim, p.a, p.b, metric as Metric)
      same[i] = p.same ? 1 : 0
    })
  }
  if (foldIndices.length < 2) throw new InvalidArgumentError('verification needs at least 2 folds')
  for (let i = 0; i < distances.length; i++) {
    if (Number.isNaN(distances[i]!)) throw new InvalidArgumentError(`distance of pair ${i} is NaN`)
  }

  const accuracies: number[] = []
  const foldThresholds: number[] = []
  const vals: number[] = []
  const fars: number[] = []
  for (let f = 0; f < foldIndices.length; f++) {
    const train: number[] = []
    foldIndices.forEach((fold, g) => {
      if (g !== f) for (const i of fold) train.push(i)
    })
    const trainSet = sortedSet(distances, same, train)
    const testSet = sortedSet(distances, same, foldIndices[f]!)
    const accGrid = grid === 'exact' ? exactCandidates(trainSet) : grid === 'lfw' ? LFW_ACCURACY_GRID : grid
    const valGrid = grid === 'exact' ? accGrid : grid === 'lfw' ? LFW_VAL_GRID : grid
    const { threshold } = bestAccuracyThreshold(trainSet, accGrid)
    foldThresholds.push(threshold)
    accuracies.push(accuracyAt(testSet, threshold))
    const vt = valThreshold(trainSet, valGrid, farTarget)
    const { val, far } = valFarAt(testSet, vt)
    vals.push(val)
    fars.push(far)
  }

  const all = sortedSet(
    distances,
    same,
    Array.from({ length: distances.length }, (_, i) => i),
  )
  const calibrated = bestAccuracyThreshold(all, grid === 'exact' ? exactCandidates(all) : grid === 'lfw' ? LFW_ACCURACY_GRID : grid)
  const roc = rocCurve(distances, same, !options.fullRoc)
  // Dropped points are collinear with their neighbours, so interpolating on either curve agrees.
  const { eer, threshold: eerThreshold } = equalErrorRate(roc)

  return {
    metric,
    pairCount: distances.length,
    sameCount: all.nSame,
    differentCount: all.nDiff,
    folds: foldIndices.length,
    accuracy: meanStd(accuracies),
    foldThresholds,
    val: { ...meanStd(vals), farTarget },
    far: meanStd(fars),
    auc: trapezoid(roc.fpr, roc.tpr),
    eer,
    eerThreshold,
    threshold: calibrated.threshold,
    thresholdAccuracy: calibrated.accuracy,
    roc,
    distances,
    same,
  }
}
