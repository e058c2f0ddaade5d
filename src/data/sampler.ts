import { checkSeed } from '../check'
import { InvalidArgumentError } from '../errors'
import { Rng } from './rng'

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
 * P×K batches as in FaceNet: each batch takes P identities that have at least two images
 * and up to K images of each, plus some single-image identities as negatives.
 *
 * An epoch visits every multi-image identity once (shuffled per epoch, P per batch; the
 * last batch is filled up to P with identities from the start of the epoch's order). Every batch is a pure function of (seed, epoch, batch), so
 * {@link state}/{@link restore} resume exactly.
 */
export class PKSampler {
  readonly P: number
  readonly K: number
  readonly negatives: number
  readonly seed: number
  /** Batches in one epoch. */
  readonly batchesPerEpoch: number
  readonly #labels: Int32Array
  /** Item indices of each identity with ≥ 2 images. */
  readonly #groups: Int32Array[]
  /** Item indices of single-image identities. */
  readonly #singles: Int32Array
  #epoch = 0
  #batch = 0
  #order: Int32Array | undefined
  #singleOrder: Int32Array | undefined

  constructor(labels: Int32Array | { labels: Int32Array }, options: PKSamplerOptions = {}) {
    const all = labels instanceof Int32Array ? labels : labels.labels
    this.P = checkCount('P', options.P ?? 45, 1)
    this.K = checkCount('K', options.K ?? 40, 2)
    this.negatives = checkCount('negatives', options.negatives ?? this.K, 0)
    this.seed = checkSeed(options.seed ?? 0)
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
  }

  /** Identities that can be anchors (≥ 2 images). */
  get anchorIdentities(): number {
    return this.#groups.length
  }

  get epoch(): number {
    return this.#epoch
  }

  state(): SamplerState {
    return { seed: this.seed, epoch: this.#epoch, batch: this.#batch, P: this.P, K: this.K, negatives: this.negatives, items: this.#labels.length }
  }

  /** Continues from a saved {@link state}; throws if it was saved by a differently built sampler. */
  restore(state: SamplerState): void {
    for (const key of ['seed', 'P', 'K', 'negatives', 'items'] as const) {
      if (state?.[key] !== this.state()[key]) {
        throw new InvalidArgumentError(`sampler state has ${key} = ${String(state?.[key])}, this sampler has ${this.state()[key]}`)
      }
    }
    checkCount('state.epoch', state.epoch, 0)
    checkCount('state.batch', state.batch, 0)
    if (state.batch > this.batchesPerEpoch) throw new InvalidArgumentError(`state.batch ${state.batch} exceeds ${this.batchesPerEpoch} batches per epoch`)
    this.#epoch = state.epoch
    this.#batch = state.batch
    this.#order = undefined
    this.#singleOrder = undefined
  }

  #epochOrders(): [Int32Array, Int32Array] {
    if (!this.#order || !this.#singleOrder) {
      const rng = new Rng(this.seed, this.#epoch, 0x5e1ec7)
      this.#order = rng.shuffle(Int32Array.from(this.#groups.keys()))
      this.#singleOrder = rng.shuffle(Int32Array.from(this.#singles))
    }
    return [this.#order, this.#singleOrder]
  }

  /** Moves to batch `batch` of epoch `epoch`. */
  seek(epoch: number, batch: number): void {
    this.restore({ ...this.state(), epoch, batch })
  }

  /** The next batch; after the last batch of an epoch, the next epoch starts. */
  next(): SampledBatch {
    if (this.#batch >= this.batchesPerEpoch) {
      this.#epoch += 1
      this.#batch = 0
      this.#order = undefined
      this.#singleOrder = undefined
    }
    const [order, singles] = this.#epochOrders()
    const b = this.#batch
    const rng = new Rng(this.seed, this.#epoch, b + 1)
    const indices: number[] = []
    // The last batch of an epoch wraps round to the start of the order, so every batch has
    // P identities: a batch of one identity has no negatives and teaches nothing.
    const identities = Math.min(this.P, order.length)
    const chosen = Array.from({ length: identities }, (_, j) => order[(b * this.P + j) % order.length]!)
    for (const g of chosen) {
      const group = this.#groups[g]!
      const take = group.length <= this.K ? Int32Array.from(group) : rng.shuffle(Int32Array.from(group)).subarray(0, this.K)
      indices.push(...take)
    }
    // Negatives walk through the epoch's shuffled singles, wrapping round if there are few.
    for (let j = 0; j < Math.min(this.negatives, singles.length); j++) {
      indices.push(singles[(b * this.negatives + j) % singles.length]!)
    }
    this.#batch += 1
    const out = Int32Array.from(indices)
    return { indices: out, labels: out.map((i) => this.#labels[i]!), epoch: this.#epoch, batch: b }
  }

  /** The remaining batches of the current epoch (all of them when it has not started). */
  *epochBatches(): Generator<SampledBatch> {
    if (this.#batch >= this.batchesPerEpoch) {
      this.#epoch += 1
      this.#batch = 0
      this.#order = undefined
      this.#singleOrder = undefined
    }
    const epoch = this.#epoch
    while (this.#batch < this.batchesPerEpoch && this.#epoch === epoch) yield this.next()
  }
}

export interface ShuffleSamplerOptions {
  /** Images per batch. Default `128`. */
  batchSize?: number
  /** Default `0`. */
  seed?: number
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
export class ShuffleSampler {
  readonly batchSize: number
  readonly seed: number
  readonly batchesPerEpoch: number
  readonly #labels: Int32Array
  #epoch = 0
  #batch = 0
  #order: Int32Array | undefined

  constructor(labels: Int32Array | { labels: Int32Array }, options: ShuffleSamplerOptions = {}) {
    this.#labels = labels instanceof Int32Array ? labels : labels.labels
    this.batchSize = checkCount('batchSize', options.batchSize ?? 128, 2)
    this.seed = checkSeed(options.seed ?? 0)
    if (this.#labels.length < 2) throw new InvalidArgumentError(`ShuffleSampler needs at least 2 images, got ${this.#labels.length}`)
    this.batchesPerEpoch = Math.ceil(this.#labels.length / this.batchSize)
  }

  get epoch(): number {
    return this.#epoch
  }

  state(): ShuffleSamplerState {
    return { kind: 'shuffle', seed: this.seed, epoch: this.#epoch, batch: this.#batch, batchSize: this.batchSize, items: this.#labels.length }
  }

  /** Continues from a saved {@link state}; throws if it was saved by a differently built sampler. */
  restore(state: ShuffleSamplerState): void {
    for (const key of ['seed', 'batchSize', 'items'] as const) {
      if (state?.[key] !== this.state()[key]) {
        throw new InvalidArgumentError(`sampler state has ${key} = ${String(state?.[key])}, this sampler has ${this.state()[key]}`)
      }
    }
    checkCount('state.epoch', state.epoch, 0)
    checkCount('state.batch', state.batch, 0)
    if (state.batch > this.batchesPerEpoch) throw new InvalidArgumentError(`state.batch ${state.batch} exceeds ${this.batchesPerEpoch} batches per epoch`)
    this.#epoch = state.epoch
    this.#batch = state.batch
    this.#order = undefined
  }

  /** Moves to batch `batch` of epoch `epoch`. */
  seek(epoch: number, batch: number): void {
    this.restore({ ...this.state(), epoch, batch })
  }

  /** The next batch; after the last batch of an epoch, the next epoch starts. */
  next(): SampledBatch {
    if (this.#batch >= this.batchesPerEpoch) {
      this.#epoch += 1
      this.#batch = 0
      this.#order = undefined
    }
    this.#order ??= new Rng(this.seed, this.#epoch, 0x5fa11e).shuffle(Int32Array.from(this.#labels.keys()))
    const order = this.#order
    const b = this.#batch
    const size = Math.min(this.batchSize, order.length)
    const indices = Int32Array.from({ length: size }, (_, j) => order[(b * this.batchSize + j) % order.length]!)
    this.#batch += 1
    return { indices, labels: indices.map((i) => this.#labels[i]!), epoch: this.#epoch, batch: b }
  }

  /** The remaining batches of the current epoch (all of them when it has not started). */
  *epochBatches(): Generator<SampledBatch> {
    if (this.#batch >= this.batchesPerEpoch) {
      this.#epoch += 1
      this.#batch = 0
      this.#order = undefined
    }
    const epoch = this.#epoch
    while (this.#batch < this.batchesPerEpoch && this.#epoch === epoch) yield this.next()
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
