/**
 * ROC over pair distances. A pair is accepted as "same" when its distance is at most the
 * threshold; this is scikit-learn's `roc_curve` with score = −distance.
 */
export interface Roc {
  /** False accept rate at each point, non-decreasing from 0 to 1. */
  fpr: number[]
  /** True accept rate at each point. */
  tpr: number[]
  /** Distance threshold of each point (accept when distance ≤ threshold); the first is −∞. */
  thresholds: number[]
}

/** Indices of `values` in ascending order. */
export function argsortAscending(values: ArrayLike<number>): Uint32Array {
  const order = new Uint32Array(values.length)
  for (let i = 0; i < order.length; i++) order[i] = i
  order.sort((x, y) => values[x]! - values[y]! || x - y)
  return order
}

/**
 * The ROC curve of distances against labels, point for point equal to scikit-learn's
 * `roc_curve(same, -distances, drop_intermediate=dropIntermediate)`.
 */
export function rocCurve(distances: ArrayLike<number>, same: ArrayLike<number | boolean>, dropIntermediate = true): Roc {
  const n = distances.length
  const order = argsortAscending(distances)
  const tps: number[] = []
  const fps: number[] = []
  const thresholds: number[] = []
  let tp = 0
  for (let i = 0; i < n; i++) {
    const idx = order[i]!
    if (same[idx]) tp++
    const next = i + 1 < n ? distances[order[i + 1]!]! : undefined
    if (next === undefined || next !== distances[idx]) {
      tps.push(tp)
      fps.push(i + 1 - tp)
      thresholds.push(distances[idx]!)
    }
  }
  let keep: number[] = tps.map((_, i) => i)
  if (dropIntermediate && tps.length > 2) {
    // Points on a straight segment between their neighbours add nothing to the curve.
    keep = [0]
    for (let i = 1; i < tps.length - 1; i++) {
      const d2f = fps[i + 1]! - 2 * fps[i]! + fps[i - 1]!
      const d2t = tps[i + 1]! - 2 * tps[i]! + tps[i - 1]!
      if (d2f !== 0 || d2t !== 0) keep.push(i)
    }
    keep.push(tps.length - 1)
  }
  const totalT = tps.length ? tps[tps.length - 1]! : 0
  const totalF = fps.length ? fps[fps.length - 1]! : 0
  const roc: Roc = { fpr: [0], tpr: [0], thresholds: [-Infinity] }
  for (const i of keep) {
    roc.fpr.push(totalF > 0 ? fps[i]! / totalF : NaN)
    roc.tpr.push(totalT > 0 ? tps[i]! / totalT : NaN)
    roc.thresholds.push(thresholds[i]!)
  }
  return roc
}

/** Area under a curve by the trapezoidal rule (x non-decreasing). */
export function trapezoid(x: readonly number[], y: readonly number[]): number {
  let area = 0
  for (let i = 1; i < x.length; i++) area += ((x[i]! - x[i - 1]!) * (y[i]! + y[i - 1]!)) / 2
  return area
}

/**
 * Equal error rate: where the false accept rate equals the false reject rate (1 − TPR),
 * linearly interpolated between the two ROC points that straddle it.
 */
export function equalErrorRate(roc: Roc): { eer: number; threshold: number } {
  const { fpr, tpr, thresholds } = roc
  for (let i = 1; i < fpr.length; i++) {
    const g0 = fpr[i - 1]! - (1 - tpr[i - 1]!)
    const g1 = fpr[i]! - (1 - tpr[i]!)
    if (g1 >= 0) {
      const t = g1 === g0 ? 0 : -g0 / (g1 - g0)
      const eer = fpr[i - 1]! + t * (fpr[i]! - fpr[i - 1]!)
      const t0 = Number.isFinite(thresholds[i - 1]!) ? thresholds[i - 1]! : thresholds[i]!
      return { eer, threshold: t0 + t * (thresholds[i]! - t0) }
    }
  }
  return { eer: NaN, threshold: NaN }
}
