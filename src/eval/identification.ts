import { InvalidArgumentError, ShapeError } from '../errors'
import { checkEmbeddings, checkMetric, distance, resolveEmbeddings, type Embeddings, type Metric } from './embeddings'
import { Rng } from '../rng'
import { TRAINING } from '../tables/training'
import { EVAL } from '../tables/eval'

export interface IdentificationOptions {
  /** Default `'l2'`. */
  metric?: Metric
  /** Gallery images per identity; the rest of that identity's images are probes. Default `1`. */
  galleryPerIdentity?: number
  /** Seed of the gallery/probe split. Default `0`. */
  seed?: number
  /** Ranks to report. Default `[1, 5]`. */
  topK?: readonly number[]
  /**
   * `'exact'` (default): brute-force k-NN over the whole gallery. `'usearch'`: an HNSW
   * index (usearch) for large galleries; approximate, so accuracy can be slightly lower.
   */
  index?: 'exact' | 'usearch'
}

export interface IdentificationResult {
  metric: Metric
  index: 'exact' | 'usearch'
  galleryCount: number
  probeCount: number
  /** Identities in the gallery (those with a single image are there as distractors). */
  identityCount: number
  /** Fraction of probes whose identity is among the k nearest gallery identities, by k. */
  topK: Record<string, number>
}

/**
 * Splits image indices by identity: per identity, `galleryPerIdentity` images chosen at
 * random (seeded) go to the gallery and the others are probes. Identities with no image
 * left over for probing stay in the gallery as distractors.
 */
export function splitGalleryProbe(
  labels: ArrayLike<number | string>,
  galleryPerIdentity = 1,
  seed = 0,
): { gallery: number[]; probes: number[] } {
  if (!Number.isInteger(galleryPerIdentity) || galleryPerIdentity < 1) {
    throw new InvalidArgumentError(`galleryPerIdentity must be a positive integer, got ${String(galleryPerIdentity)}`)
  }
  const byIdentity = new Map<number | string, number[]>()
  for (let i = 0; i < labels.length; i++) {
    const list = byIdentity.get(labels[i]!)
    if (list) list.push(i)
    else byIdentity.set(labels[i]!, [i])
  }
  // The library's seeded generator: the split must not depend on Math.random.
  const rng = new Rng(seed)
  const gallery: number[] = []
  const probes: number[] = []
  for (const images of byIdentity.values()) {
    // Shuffled as a copy, so the choice depends only on the seed and the input order.
    const shuffled = rng.shuffle(images.slice())
    const cut = Math.min(galleryPerIdentity, shuffled.length)
    gallery.push(...shuffled.slice(0, cut))
    probes.push(...shuffled.slice(cut))
  }
  gallery.sort((x, y) => x - y)
  probes.sort((x, y) => x - y)
  return { gallery, probes }
}

/** Gallery row indices of each probe's nearest neighbours, nearest first, `k` per probe. */
type Neighbours = (probe: number, k: number) => Int32Array

function exactNeighbours(data: ArrayLike<number>, dim: number, gallery: number[], probes: number[], metric: Metric): Neighbours {
  return (p, k) => {
    // Keep the k nearest in a small sorted buffer: O(gallery) per probe when k is small.
    const bestD = new Float64Array(k).fill(Infinity)
    const bestG = new Int32Array(k).fill(-1)
    for (let g = 0; g < gallery.length; g++) {
      const d = distance(data, dim, probes[p]!, gallery[g]!, metric)
      if (!(d < bestD[k - 1]!)) continue
      let i = k - 1
      while (i > 0 && bestD[i - 1]! > d) {
        bestD[i] = bestD[i - 1]!
        bestG[i] = bestG[i - 1]!
        i--
      }
      bestD[i] = d
      bestG[i] = g
    }
    return bestG.filter((g) => g >= 0)
  }
}

function usearchNeighbours(data: Float32Array | Float64Array, dim: number, gallery: number[], probes: number[], metric: Metric): Neighbours {
  // Loaded on use: the native index is needed only by callers who ask for it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const usearch = require('usearch') as typeof import('usearch')
  const index = new usearch.Index({
    dimensions: dim,
    metric: metric === 'l2' ? usearch.MetricKind.L2sq : usearch.MetricKind.Cos,
    quantization: usearch.ScalarKind.F32,
    connectivity: 16,
    expansion_add: 128,
    expansion_search: 64,
    multi: false,
  })
  const rows = (indices: number[]): Float32Array => {
    const out = new Float32Array(indices.length * dim)
    indices.forEach((r, i) => out.set(data.subarray(r * dim, (r + 1) * dim), i * dim))
    return out
  }
  // One thread: usearch 2.25's parallel insert builds a different graph on each run, and on
  // a 40-point gallery it missed up to 3 of 40 true nearest neighbours (CI saw top-1 0.95).
  // A serial build is the same graph every run, so the reported accuracy repeats.
  index.add(BigUint64Array.from(gallery, (_, i) => BigInt(i)), rows(gallery), 1)
  const probeRows = rows(probes)
  return (p, k) => {
    const matches = index.search(probeRows.subarray(p * dim, (p + 1) * dim), Math.min(k, gallery.length), 0)
    const out: number[] = []
    for (const key of matches.keys) {
      // usearch pads missing results with the all-ones key.
      if (key < BigInt(gallery.length)) out.push(Number(key))
    }
    return Int32Array.from(out)
  }
}

/**
 * Closed-set identification: each probe is matched against the gallery and counts as
 * correct at rank k when its identity is among the k nearest distinct gallery identities.
 *
 * @param labels identity of each embedding row (any number or string).
 */
export function evaluateIdentification(
  input: Embeddings,
  labels: ArrayLike<number | string>,
  options: IdentificationOptions = {},
): IdentificationResult {
  const rows = checkEmbeddings(input)
  if (labels.length !== rows) throw new ShapeError(`${labels.length} labels for ${rows} embeddings`)
  const metric = checkMetric(options.metric ?? (EVAL.metric.default as Metric))
  const topK = options.topK ?? [1, 5]
  if (topK.length === 0 || topK.some((k) => !Number.isInteger(k) || k < 1)) {
    throw new InvalidArgumentError(`topK must list positive integers, got ${JSON.stringify(topK)}`)
  }
  const indexKind = options.index ?? 'exact'
  if (indexKind !== 'exact' && indexKind !== 'usearch') {
    throw new InvalidArgumentError(`index must be 'exact' or 'usearch', got ${JSON.stringify(indexKind)}`)
  }
  const galleryPerIdentity = options.galleryPerIdentity ?? 1
  const { gallery, probes } = splitGalleryProbe(labels, galleryPerIdentity, options.seed ?? TRAINING.seed.default)
  if (probes.length === 0) throw new InvalidArgumentError('no identity has more images than galleryPerIdentity, so there are no probes')
  const data = resolveEmbeddings(input)
  const maxK = Math.max(...topK)
  const galleryLabels = gallery.map((g) => labels[g]!)
  const identityCount = new Set(galleryLabels).size
  // Enough neighbours to see maxK distinct identities even when each has its full quota near the probe.
  const fetch = Math.min(gallery.length, maxK * galleryPerIdentity)
  const neighbours =
    indexKind === 'exact'
      ? exactNeighbours(data, input.dim, gallery, probes, metric)
      : usearchNeighbours(data, input.dim, gallery, probes, metric)

  const hits = new Array<number>(topK.length).fill(0)
  for (let p = 0; p < probes.length; p++) {
    const truth = labels[probes[p]!]!
    const seen = new Set<number | string>()
    let rank = Infinity
    for (const g of neighbours(p, fetch)) {
      const id = galleryLabels[g]!
      if (seen.has(id)) continue
      seen.add(id)
      if (id === truth) {
        rank = seen.size
        break
      }
      if (seen.size >= maxK) break
    }
    topK.forEach((k, i) => {
      if (rank <= k) hits[i]!++
    })
  }
  const result: Record<string, number> = {}
  topK.forEach((k, i) => (result[String(k)] = hits[i]! / probes.length))
  return {
    metric,
    index: indexKind,
    galleryCount: gallery.length,
    probeCount: probes.length,
    identityCount,
    topK: result,
  }
}
