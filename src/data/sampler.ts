import { checkSeed } from '../check'
import { InvalidArgumentError } from '../errors'
import { Rng } from './rng'
import { TRAINING } from '../tables/training'

export interface PKSamplerOptions {
  /** Identities per batch. Default `45`: with K = 40 about the paper's 1,800 faces. */
  P?: number
  /** Images per identity, capped by what each identity has. Default `40`, as in the paper. */
  K?: number
  /**
   * Extra images per batch from identities with a single image; they can only be
   * negatives (they have no positive). Default `K`. `0` leaves them out.
   */
  negatives?: number
  /** Default `0`. */
  seed?: number
  /** Data-parallel training: this rank's share of each batch (see {@link Shard}). */
  shard?: Shard
}

/**
 * Rank `rank` of `worldSize` takes its share of each global batch: of a P×K batch, its
 * `P/worldSize` identities (with all their images) and its slice of the negatives; of a
 * shuffled batch, its slice. The global batch is the one a single process draws from the
 * same (seed, epoch, batch), and the ranks' shares in rank order make it up exactly.
 */
export interface Shard {
  rank: number
  worldSize: number
}

/** Positions `from..to` of `count` that rank `shard.rank` takes. */
function share(count: number, shard: Shard | undefined): [number, number] {
  if (!shard) return [0, count]
  return [Math.floor((shard.rank * count) / shard.worldSize), Math.floor(((shard.rank + 1) * count) / shard.worldSize)]
}

function checkShard(shard: Shard | undefined): Shard | undefined {
  if (shard === undefined) return undefined
  const { rank, worldSize } = shard
  if (!Number.isInteger(worldSize) || worldSize < 1 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new InvalidArgumentError(`shard must be a rank in 0..worldSize-1 and a worldSize ≥ 1, got rank ${String(rank)} of ${String(worldSize)}`)
  }
  return worldSize === 1 ? undefined : { rank, worldSize }
}

/** Everything needed to resume a sampler exactly: where it is, and what it was built with. */
export interface SamplerState {
  seed: number
  epoch: number
  /** The next batch's index within the epoch. */
  batch: number
  P: number
  K: number
  negatives: number
  /** Number of items the sampler was built on; restore checks it. */
  items: number
}

export interface SampledBatch {
  /** Item indices into the source, grouped by identity, the negatives last. */
  indices: Int32Array
  labels: Int32Array
  epoch: number
  batch: number
}

function checkCount(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got ${String(value)}`)
  return value
}

/**
 * Where a sampler is (the epoch, and the next batch in it) for samplers whose every batch is a
 * pure function of (seed, epoch, batch): the resume checks and the epoch rollover they share.
 */
abstract class EpochSampler<State extends { epoch: number; batch: number }> {
  /** Batches in one epoch. */
  abstract readonly batchesPerEpoch: number
  /** The keys of {@link state} that say how the sampler was built; {@link restore} refuses a state that differs in one. */
  protected abstract readonly builtWith: readonly (keyof State & string)[]
  #epoch = 0
  #batch = 0

  get epoch(): number {
    return this.#epoch
  }

  /** The position, for {@link state}. */
  protected get position(): { epoch: number; batch: number } {
    return { epoch: this.#epoch, batch: this.#batch }
  }

  abstract state(): State

  /** Batch `batch` of epoch `epoch`. */
  protected abstract batchAt(epoch: number, batch: number): SampledBatch

  /** Continues from a saved {@link state}; throws if it was saved by a differently built sampler. */
  restore(state: State): void {
    const own = this.state()
    for (const key of this.builtWith) {
      if (state?.[key] !== own[key]) {
        throw new InvalidArgumentError(`sampler state has ${key} = ${String(state?.[key])}, this sampler has ${String(own[key])}`)
      }
    }
    checkCount('state.epoch', state.epoch, 0)
    checkCount('state.batch', state.batch, 0)
    if (state.batch > this.batchesPerEpoch) throw new InvalidArgumentError(`state.batch ${state.batch} exceeds ${this.batchesPerEpoch} batches per epoch`)
    this.#epoch = state.epoch
    this.#batch = state.batch
  }

  /** Moves to batch `batch` of epoch `epoch`. */
  seek(epoch: number, batch: number): void {
    this.restore({ ...this.state(), epoch, batch })
  }

  #rollOver(): void {
    if (this.#batch >= this.batchesPerEpoch) {
      this.#epoch += 1
      this.#batch = 0
    }
  }

  /** The next batch; after the last batch of an epoch, the next epoch starts. */
  next(): SampledBatch {
    this.#rollOver()
    const batch = this.batchAt(this.#epoch, this.#batch)
    this.#batch += 1
    return batch
  }

  /** The remaining batches of the current epoch (all of them when it has not started). */
  *epochBatches(): Generator<SampledBatch> {
    this.#rollOver()
    const epoch = this.#epoch
    while (this.#batch < this.batchesPerEpoch && this.#epoch === epoch) yield this.next()
  }
}

/**
 * P×K batches as in FaceNet: each batch takes P identities that have at least two images
 * and up to K images of each, plus some single-image identities as negatives.
 *
 * An epoch visits every multi-image identity once (shuffled per epoch, P per batch; the
 * last batch is filled up to P with identities from the start of the epoch's order). Every batch is a pure function of (seed, epoch, batch), so
 * {@link state}/{@link restore} resume exactly.
 */
export class PKSampler extends EpochSampler<SamplerState> {
  readonly P: number
  readonly K: number
  readonly negatives: number
  readonly seed: number
  readonly batchesPerEpoch: number
  readonly shard?: Shard
  protected readonly builtWith = ['seed', 'P', 'K', 'negatives', 'items'] as const
  readonly #labels: Int32Array
  /** Item indices of each identity with ≥ 2 images. */
  readonly #groups: Int32Array[]
  /** Item indices of single-image identities. */
  readonly #singles: Int32Array
  /** The shuffled identity and single-image orders of one epoch. */
  #orders: { epoch: number; groups: Int32Array; singles: Int32Array } | undefined

  constructor(labels: Int32Array | { labels: Int32Array }, options: PKSamplerOptions = {}) {
    super()
    const all = labels instanceof Int32Array ? labels : labels.labels
    this.P = checkCount('P', options.P ?? 45, 1)
    this.K = checkCount('K', options.K ?? 40, 2)
    this.negatives = checkCount('negatives', options.negatives ?? this.K, 0)
    this.seed = checkSeed(options.seed ?? TRAINING.seed.default)
    this.#labels = all
    const byLabel = new Map<number, number[]>()
    all.forEach((label, i) => {
      const list = byLabel.get(label)
      if (list) list.push(i)
      else byLabel.set(label, [i])
    })
    const labelsSorted = [...byLabel.keys()].sort((a, b) => a - b)
    this.#groups = labelsSorted.filter((l) => byLabel.get(l)!.length >= 2).map((l) => Int32Array.from(byLabel.get(l)!))
    this.#singles = Int32Array.from(labelsSorted.filter((l) => byLabel.get(l)!.length === 1).map((l) => byLabel.get(l)![0]!))
    if (this.#groups.length === 0) throw new InvalidArgumentError('PKSampler needs at least one identity with two or more images')
    this.batchesPerEpoch = Math.ceil(this.#groups.length / this.P)
    this.shard = checkShard(options.shard)
    const perBatch = Math.min(this.P, this.#groups.length)
    if (this.shard && perBatch < this.shard.worldSize) {
      throw new InvalidArgumentError(
        `a batch of ${perBatch} identities (P ${this.P}, ${this.#groups.length} with 2 or more images) cannot be shared by ${this.shard.worldSize} ranks: each rank needs at least one identity`,
      )
    }
  }

  /** Identities that can be anchors (≥ 2 images). */
  get anchorIdentities(): number {
    return this.#groups.length
  }

  state(): SamplerState {
    const { epoch, batch } = this.position
    return { seed: this.seed, epoch, batch, P: this.P, K: this.K, negatives: this.negatives, items: this.#labels.length }
  }

  #epochOrders(epoch: number): [Int32Array, Int32Array] {
    if (this.#orders?.epoch !== epoch) {
      const rng = new Rng(this.seed, epoch, 0x5e1ec7)
      this.#orders = { epoch, groups: rng.shuffle(Int32Array.from(this.#groups.keys())), singles: rng.shuffle(Int32Array.from(this.#singles)) }
    }
    return [this.#orders.groups, this.#orders.singles]
  }

  protected batchAt(epoch: number, b: number): SampledBatch {
    const [order, singles] = this.#epochOrders(epoch)
    const rng = new Rng(this.seed, epoch, b + 1)
    const indices: number[] = []
    // The last batch of an epoch wraps round to the start of the order, so every batch has
    // P identities: a batch of one identity has no negatives and teaches nothing.
    const identities = Math.min(this.P, order.length)
    const chosen = Array.from({ length: identities }, (_, j) => order[(b * this.P + j) % order.length]!)
    // Every rank draws the whole batch's images (the same rng calls as one process), and
    // keeps its share.
    const [first, last] = share(identities, this.shard)
    for (const [j, g] of chosen.entries()) {
      const group = this.#groups[g]!
      const take = group.length <= this.K ? Int32Array.from(group) : rng.shuffle(Int32Array.from(group)).subarray(0, this.K)
      if (j >= first && j < last) indices.push(...take)
    }
    // Negatives walk through the epoch's shuffled singles, wrapping round if there are few.
    const [from, to] = share(Math.min(this.negatives, singles.length), this.shard)
    for (let j = from; j < to; j++) {
      indices.push(singles[(b * this.negatives + j) % singles.length]!)
    }
    const out = Int32Array.from(indices)
    return { indices: out, labels: out.map((i) => this.#labels[i]!), epoch, batch: b }
  }
}

export interface ShuffleSamplerOptions {
  /** Images per batch. Default `128`. */
  batchSize?: number
  /** Default `0`. */
  seed?: number
  /** Data-parallel training: this rank's share of each batch. */
  shard?: Shard
}

/** Everything needed to resume a {@link ShuffleSampler} exactly. */
export interface ShuffleSamplerState {
  kind: 'shuffle'
  seed: number
  epoch: number
  batch: number
  batchSize: number
  items: number
}

/**
 * Plain shuffled batches over every image, single-image identities included: what the
 * classification losses train on (each image is a sample of its class; no pairs needed).
 *
 * An epoch visits every image once in an order shuffled per epoch; the last batch is filled
 * up to `batchSize` from the start of that order, so every batch has the same size. Every
 * batch is a pure function of (seed, epoch, batch), so {@link state}/{@link restore} resume
 * exactly.
 */
export class ShuffleSampler extends EpochSampler<ShuffleSamplerState> {
  readonly batchSize: number
  readonly seed: number
  readonly batchesPerEpoch: number
  readonly shard?: Shard
  protected readonly builtWith = ['seed', 'batchSize', 'items'] as const
  readonly #labels: Int32Array
  /** One epoch's shuffled order of every item. */
  #order: { epoch: number; items: Int32Array } | undefined

  constructor(labels: Int32Array | { labels: Int32Array }, options: ShuffleSamplerOptions = {}) {
    super()
    this.#labels = labels instanceof Int32Array ? labels : labels.labels
    this.batchSize = checkCount('batchSize', options.batchSize ?? TRAINING.batchSize.default, 2)
    this.seed = checkSeed(options.seed ?? TRAINING.seed.default)
    if (this.#labels.length < 2) throw new InvalidArgumentError(`ShuffleSampler needs at least 2 images, got ${this.#labels.length}`)
    this.batchesPerEpoch = Math.ceil(this.#labels.length / this.batchSize)
    this.shard = checkShard(options.shard)
    const size = Math.min(this.batchSize, this.#labels.length)
    if (this.shard && size < 2 * this.shard.worldSize) {
      throw new InvalidArgumentError(`a batch of ${size} images cannot be shared by ${this.shard.worldSize} ranks: each rank needs at least 2; raise batchSize`)
    }
  }

  state(): ShuffleSamplerState {
    return { kind: 'shuffle', seed: this.seed, ...this.position, batchSize: this.batchSize, items: this.#labels.length }
  }

  protected batchAt(epoch: number, b: number): SampledBatch {
    if (this.#order?.epoch !== epoch) this.#order = { epoch, items: new Rng(this.seed, epoch, 0x5fa11e).shuffle(Int32Array.from(this.#labels.keys())) }
    const order = this.#order.items
    const size = Math.min(this.batchSize, order.length)
    const [from, to] = share(size, this.shard)
    const indices = Int32Array.from({ length: to - from }, (_, j) => order[(b * this.batchSize + from + j) % order.length]!)
    return { indices, labels: indices.map((i) => this.#labels[i]!), epoch, batch: b }
  }
}

/** Items in order, `batchSize` at a time, one pass: for embedding an evaluation set. */
export class SequentialSampler {
  readonly batchSize: number
  readonly #labels: Int32Array
  #next = 0

  constructor(labels: Int32Array | { labels: Int32Array }, batchSize: number) {
    this.#labels = labels instanceof Int32Array ? labels : labels.labels
    this.batchSize = checkCount('batchSize', batchSize, 1)
  }

  *epochBatches(): Generator<SampledBatch> {
    let batch = 0
    while (this.#next < this.#labels.length) {
      const start = this.#next
      const end = Math.min(this.#labels.length, start + this.batchSize)
      this.#next = end
      const indices = Int32Array.from({ length: end - start }, (_, i) => start + i)
      yield { indices, labels: this.#labels.slice(start, end), epoch: 0, batch: batch++ }
    }
  }
}
