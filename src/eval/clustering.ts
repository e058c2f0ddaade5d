import { InvalidArgumentError, ShapeError } from '../errors'
import { checkEmbeddings, checkMetric, distance, resolveEmbeddings, type Embeddings, type Metric } from './embeddings'

import type { ClusteringMethod } from '../options'
import { EVAL } from '../tables/eval'

export type { ClusteringMethod }

export interface ClusteringOptions {
  /** Default `'l2'`. */
  metric?: Metric
  /**
   * Distance below which faces are joined: for connected components, any two faces closer
   * than it; for average linkage, clusters whose mean pairwise distance is below it.
   * Typically the verification threshold.
   */
  threshold: number
  /** Default `'average-linkage'`. */
  method?: ClusteringMethod
}

export interface ClusterScores {
  /** Share of faces in their cluster's majority identity. */
  purity: number
  /** Normalized mutual information, arithmetic mean normalization (scikit-learn's default). */
  nmi: number
  /** Pairwise precision/recall/F1 over all pairs of faces put in the same cluster. */
  pairwisePrecision: number
  pairwiseRecall: number
  pairwiseF: number
}

export interface ClusteringResult extends ClusterScores {
  method: ClusteringMethod
  metric: Metric
  threshold: number
  clusterCount: number
  identityCount: number
  /** Cluster id of each face, 0-based, numbered by first appearance. */
  assignments: Int32Array
}

// Average linkage keeps an n×n matrix; beyond this it no longer fits comfortably in memory.
const MAX_LINKAGE_POINTS = 20000

class UnionFind {
  readonly parent: Int32Array
  constructor(n: number) {
    this.parent = Int32Array.from({ length: n }, (_, i) => i)
  }
  find(x: number): number {
    while (this.parent[x] !== x) {
      this.parent[x] = this.parent[this.parent[x]!]!
      x = this.parent[x]!
    }
    return x
  }
  union(a: number, b: number): void {
    const ra = this.find(a)
    const rb = this.find(b)
    if (ra !== rb) this.parent[Math.max(ra, rb)] = Math.min(ra, rb)
  }
  labels(): Int32Array {
    const ids = new Map<number, number>()
    return Int32Array.from(this.parent, (_, i) => {
      const root = this.find(i)
      let id = ids.get(root)
      if (id === undefined) ids.set(root, (id = ids.size))
      return id
    })
  }
}

/** Single-linkage at a threshold: faces closer than it are linked, clusters are the components. */
export function connectedComponents(data: ArrayLike<number>, dim: number, threshold: number, metric: Metric): Int32Array {
  const n = data.length / dim
  const uf = new UnionFind(n)
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) if (distance(data, dim, i, j, metric) < threshold) uf.union(i, j)
  }
  return uf.labels()
}

/**
 * Agglomerative clustering with average linkage (UPGMA), cut where the mean distance
 * between clusters reaches the threshold. Nearest-neighbour chain: O(n²) time, n² floats.
 */
export function averageLinkage(data: ArrayLike<number>, dim: number, threshold: number, metric: Metric): Int32Array {
  const n = data.length / dim
  if (n > MAX_LINKAGE_POINTS) {
    throw new InvalidArgumentError(`average linkage is limited to ${MAX_LINKAGE_POINTS} faces (n² memory), got ${n}`)
  }
  const d = new Float32Array(n * n)
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = distance(data, dim, i, j, metric)
      d[i * n + j] = v
      d[j * n + i] = v
    }
  }
  const size = new Int32Array(n).fill(1)
  const active = new Uint8Array(n).fill(1)
  const uf = new UnionFind(n)
  const chain: number[] = []
  let remaining = n
  while (remaining > 1) {
    if (chain.length === 0) chain.push(active.indexOf(1))
    const a = chain[chain.length - 1]!
    const prev = chain.length > 1 ? chain[chain.length - 2]! : -1
    // Nearest active cluster to a; prefer the previous chain element on ties so the chain terminates.
    let best = prev
    let bestD = prev >= 0 ? d[a * n + prev]! : Infinity
    for (let c = 0; c < n; c++) {
      if (!active[c] || c === a) continue
      const v = d[a * n + c]!
      if (v < bestD) {
        bestD = v
        best = c
      }
    }
    if (best === prev) {
      chain.pop()
      chain.pop()
      // Merge heights of a reducible linkage never decrease along the tree, so the cut at
      // the threshold is exactly the set of merges below it, whatever order they come in.
      if (bestD < threshold) uf.union(a, prev)
      // Lance–Williams update for average linkage; a absorbs prev.
      const sa = size[a]!
      const sb = size[prev]!
      for (let c = 0; c < n; c++) {
        if (!active[c] || c === a || c === prev) continue
        const v = (sa * d[a * n + c]! + sb * d[prev * n + c]!) / (sa + sb)
        d[a * n + c] = v
        d[c * n + a] = v
      }
      size[a] = sa + sb
      active[prev] = 0
      remaining--
    } else {
      chain.push(best)
    }
  }
  return uf.labels()
}

function combinations2(x: number): number {
  return (x * (x - 1)) / 2
}

/** Purity, NMI and pairwise F-score of predicted clusters against true identities. */
export function clusterScores(predicted: ArrayLike<number>, truth: ArrayLike<number | string>): ClusterScores {
  const n = predicted.length
  if (truth.length !== n) throw new ShapeError(`${truth.length} labels for ${n} cluster assignments`)
  if (n === 0) throw new InvalidArgumentError('cannot score an empty clustering')
  const contingency = new Map<string, number>()
  const clusterSizes = new Map<number, number>()
  const classSizes = new Map<number | string, number>()
  for (let i = 0; i < n; i++) {
    const key = `${predicted[i]!}\u0000${String(truth[i]!)}`
    contingency.set(key, (contingency.get(key) ?? 0) + 1)
    clusterSizes.set(predicted[i]!, (clusterSizes.get(predicted[i]!) ?? 0) + 1)
    classSizes.set(truth[i]!, (classSizes.get(truth[i]!) ?? 0) + 1)
  }
  const majority = new Map<number, number>()
  let mi = 0
  let tpPairs = 0
  for (const [key, count] of contingency) {
    const cluster = Number(key.slice(0, key.indexOf('\u0000')))
    majority.set(cluster, Math.max(majority.get(cluster) ?? 0, count))
    tpPairs += combinations2(count)
  }
  // MI needs the class size of each cell: walk the data once more, visiting each cell once.
  const visited = new Set<string>()
  for (let i = 0; i < n; i++) {
    const key = `${predicted[i]!}\u0000${String(truth[i]!)}`
    if (visited.has(key)) continue
    visited.add(key)
    const nij = contingency.get(key)!
    const a = clusterSizes.get(predicted[i]!)!
    const b = classSizes.get(truth[i]!)!
    mi += (nij / n) * Math.log((n * nij) / (a * b))
  }
  const entropy = (sizes: Iterable<number>): number => {
    let h = 0
    for (const s of sizes) h -= (s / n) * Math.log(s / n)
    return h
  }
  const hPred = entropy(clusterSizes.values())
  const hTrue = entropy(classSizes.values())
  // scikit-learn: both labelings constant (zero entropy) count as a perfect match.
  const nmi = hPred === 0 && hTrue === 0 ? 1 : Math.max(0, mi) / Math.max((hPred + hTrue) / 2, Number.MIN_VALUE)
  let predPairs = 0
  for (const s of clusterSizes.values()) predPairs += combinations2(s)
  let truePairs = 0
  for (const s of classSizes.values()) truePairs += combinations2(s)
  const precision = predPairs ? tpPairs / predPairs : 1
  const recall = truePairs ? tpPairs / truePairs : 1
  let purity = 0
  for (const m of majority.values()) purity += m
  return {
    purity: purity / n,
    nmi,
    pairwisePrecision: precision,
    pairwiseRecall: recall,
    pairwiseF: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0,
  }
}

/** Clusters faces at a distance threshold and scores the clusters against their identities. */
export function evaluateClustering(
  input: Embeddings,
  labels: ArrayLike<number | string>,
  options: ClusteringOptions,
): ClusteringResult {
  const rows = checkEmbeddings(input)
  if (labels.length !== rows) throw new ShapeError(`${labels.length} labels for ${rows} embeddings`)
  const metric = checkMetric(options.metric ?? (EVAL.metric.default as Metric))
  const { threshold } = options
  if (!Number.isFinite(threshold)) throw new InvalidArgumentError(`threshold must be a finite number, got ${String(threshold)}`)
  const method = options.method ?? 'average-linkage'
  const data = resolveEmbeddings(input)
  let assignments: Int32Array
  if (method === 'connected-components') assignments = connectedComponents(data, input.dim, threshold, metric)
  else if (method === 'average-linkage') assignments = averageLinkage(data, input.dim, threshold, metric)
  else throw new InvalidArgumentError(`method must be 'connected-components' or 'average-linkage', got ${JSON.stringify(method)}`)
  return {
    method,
    metric,
    threshold,
    clusterCount: new Set(assignments).size,
    identityCount: new Set(Array.from(labels)).size,
    assignments,
    ...clusterScores(assignments, labels),
  }
}
