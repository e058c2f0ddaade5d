import { availableParallelism } from 'node:os'
import sharp from 'sharp'
import { checkSeed } from '../check'
import { DataError, InvalidArgumentError } from '../errors'
import { ON_BAD_IMAGE, quotedList } from '../options'
import { checkAugment, checkCenterCrop, checkFit, checkSize, drawTransform, IDENTITY_TRANSFORM, preprocessImage, withCenterCrop, type AugmentOptions, type Fit, type InputSize } from './preprocess'
import { Rng } from './rng'
import type { SampledBatch } from './sampler'
import { badData, defaultWarn, type ImageSource, type OnBadImage, type SkippedImage } from './source'
import { TRAINING } from '../tables/training'

// libuv reads UV_THREADPOOL_SIZE once, when its pool first starts. Decoding runs on that
// pool (sharp and fs both), and its default of 4 threads leaves cores idle on larger
// machines; raise it here, before first use, unless the user set it. Setting it in the
// environment before starting node always works; here it works only if nothing used the
// pool before this module was loaded.
if (process.env.UV_THREADPOOL_SIZE === undefined) {
  process.env.UV_THREADPOOL_SIZE = String(Math.max(4, Math.min(64, availableParallelism() + 2)))
}

/** A batch ready for the model: N images of H×W RGB, channels last, in one buffer. */
export interface Batch {
  /** N×H×W×3 uint8, contiguous. */
  pixels: Uint8Array
  /** Identity label of each image. */
  labels: Int32Array
  /** Item index (into the source) of each image. */
  indices: Int32Array
  shape: [number, number, number, 3]
  epoch: number
  batch: number
}

/** What the loader draws batches from: a {@link PKSampler} or a {@link SequentialSampler}. */
export interface BatchSampler {
  epochBatches(): Iterable<SampledBatch>
}

export interface LoaderOptions {
  /** Output size, e.g. the model's `info.inputSize`. */
  size: InputSize
  sampler: BatchSampler
  /** Random augmentation (see {@link AugmentOptions}); `false` (default) only resizes. */
  augment?: AugmentOptions | false
  /** Seed of the augmentation draws. Default `0`. */
  seed?: number
  /** Default `'cover'`. */
  fit?: Fit
  /**
   * Keep only the central fraction of each image before resizing and augmenting (a fixed
   * face crop). Default `1` (the whole image). Use the same value for training and evaluation.
   */
  centerCrop?: number
  /** Batches decoded ahead of the one being consumed (the queue bound). Default `2`. */
  prefetch?: number
  /**
   * Images decoded at once, across batches. Default: `UV_THREADPOOL_SIZE` (which this
   * module sets to CPUs + 2 unless set). Each image uses one libvips thread
   * (`sharp.concurrency(1)`): many small images parallelize better across images than
   * within one.
   */
  concurrency?: number
  /** `'error'` (default) rejects the iteration with a {@link DataError}; `'skip'` drops the image with a warning. */
  onBadImage?: OnBadImage
  onWarning?: (error: DataError) => void
  /** Aborting rejects the pending `next()` with the signal's reason and stops decoding. */
  signal?: AbortSignal
}

/** A FIFO counting semaphore: earlier batches' images get threads first. */
class Semaphore {
  #free: number
  readonly #waiting: (() => void)[] = []
  constructor(n: number) {
    this.#free = n
  }
  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--
      return
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve))
  }
  release(): void {
    const next = this.#waiting.shift()
    if (next) next()
    else this.#free++
  }
}

/**
 * Decodes batches in parallel ahead of the consumer: while batch t trains, batches
 * t+1…t+prefetch decode on libuv's pool; no more are started until one is taken
 * (backpressure). `for await (const batch of loader)` runs one epoch of the sampler.
 */
export class BatchLoader implements AsyncIterable<Batch> {
  readonly source: ImageSource
  readonly size: InputSize
  readonly #options: LoaderOptions
  readonly #augment: Required<AugmentOptions> | undefined
  readonly #semaphore: Semaphore
  readonly #skipped: SkippedImage[] = []

  constructor(source: ImageSource, options: LoaderOptions) {
    this.source = source
    this.size = checkSize(options?.size)
    if (!options.sampler || typeof options.sampler.epochBatches !== 'function') {
      throw new InvalidArgumentError('options.sampler must be a PKSampler or SequentialSampler')
    }
    const prefetch = options.prefetch ?? TRAINING.prefetch.default
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new InvalidArgumentError(`prefetch must be an integer ≥ 1, got ${String(prefetch)}`)
    const concurrency = options.concurrency ?? Number(process.env.UV_THREADPOOL_SIZE ?? 4)
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new InvalidArgumentError(`concurrency must be an integer ≥ 1, got ${String(concurrency)}`)
    const mode = options.onBadImage ?? TRAINING.onBadImage.default
    if (!ON_BAD_IMAGE.includes(mode)) throw new InvalidArgumentError(`onBadImage must be ${quotedList(ON_BAD_IMAGE)}, got ${String(mode)}`)
    this.#augment = options.augment ? checkAugment(options.augment) : undefined
    checkCenterCrop(options.centerCrop)
    checkFit(options.fit)
    checkSeed(options.seed ?? TRAINING.seed.default)
    this.#options = { ...options, prefetch, concurrency, onBadImage: mode }
    this.#semaphore = new Semaphore(concurrency)
    sharp.concurrency(1)
  }

  /** Images dropped with `onBadImage: 'skip'`. */
  get skipped(): readonly SkippedImage[] {
    return this.#skipped
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    const { signal } = this.#options
    signal?.throwIfAborted()
    const stop = { stopped: false }
    try {
      yield* prefetched(this.#options.sampler.epochBatches(), this.#options.prefetch!, (sampled) => this.#load(sampled, stop), signal)
    } finally {
      stop.stopped = true
    }
  }

  async #load(sampled: SampledBatch, stop: { stopped: boolean }): Promise<Batch> {
    const { height, width } = this.size
    const plane = height * width * 3
    const n = sampled.indices.length
    const rng = this.#augment ? new Rng(this.#options.seed ?? TRAINING.seed.default, sampled.epoch, sampled.batch) : undefined
    // Drawn up front in image order, so the transforms do not depend on decode timing.
    const crop = this.#options.centerCrop ?? TRAINING.centerCrop.default
    const transforms = Array.from({ length: n }, () => withCenterCrop(rng ? drawTransform(rng, this.#augment!) : IDENTITY_TRANSFORM, crop))
    const pixels = new Uint8Array(n * plane)
    const ok = new Uint8Array(n)
    const errors: DataError[] = []
    await Promise.all(
      Array.from(sampled.indices, async (index, i) => {
        await this.#semaphore.acquire()
        try {
          if (stop.stopped || this.#options.signal?.aborted) return
          const input = await this.source.input(index)
          const data = await preprocessImage(input, this.size, transforms[i], this.#options.fit)
          pixels.set(data, i * plane)
          ok[i] = 1
        } catch (error) {
          if (error instanceof DataError) errors[i] = error
          else throw error
        } finally {
          this.#semaphore.release()
        }
      }),
    )
    for (const error of errors) {
      if (error) badData(error, this.#options.onBadImage!, this.#skipped, this.#options.onWarning ?? defaultWarn)
    }
    let kept = n
    let indices = sampled.indices
    let labels = sampled.labels
    let out = pixels
    if (errors.length > 0) {
      // Compact the good images to the front (native memmove, no per-pixel JS).
      const keep = Array.from({ length: n }, (_, i) => i).filter((i) => ok[i])
      keep.forEach((from, to) => {
        if (from !== to) pixels.copyWithin(to * plane, from * plane, (from + 1) * plane)
      })
      kept = keep.length
      indices = Int32Array.from(keep, (i) => sampled.indices[i]!)
      labels = Int32Array.from(keep, (i) => sampled.labels[i]!)
      out = pixels.subarray(0, kept * plane)
    }
    return { pixels: out, labels, indices, shape: [kept, height, width, 3], epoch: sampled.epoch, batch: sampled.batch }
  }
}

/**
 * Yields `load(item)` for each item in order, with up to `depth` loads started ahead of the
 * one being consumed; a failed load surfaces when its turn comes. Shared by the sharp and
 * the packed loaders.
 */
export async function* prefetched<T, B>(items: Iterable<T>, depth: number, load: (item: T) => Promise<B>, signal: AbortSignal | undefined): AsyncGenerator<B> {
  const source = items[Symbol.iterator]()
  const pending: Promise<B>[] = []
  let exhausted = false
  const fill = (): void => {
    while (!exhausted && pending.length < depth) {
      const next = source.next()
      if (next.done) {
        exhausted = true
        break
      }
      const p = load(next.value)
      // Failures surface when the batch is awaited; this only silences the unawaited copy.
      p.catch(() => {})
      pending.push(p)
    }
  }
  fill()
  while (pending.length > 0) {
    const batch = await abortable(pending.shift()!, signal)
    fill()
    yield batch
  }
}

export async function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort!)
  }
}
