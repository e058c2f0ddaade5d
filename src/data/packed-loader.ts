import type { BindingBatchTransform, BindingImageBatch, BindingModel, BindingStepStats } from '../../index'
import { checkSeed } from '../check'
import { InvalidArgumentError } from '../errors'
import { BatchLoader, prefetched, type Batch, type LoaderOptions } from './loader'
import { fromCoreDataError, mappedImages, type NpyDataset } from './npy'
import { checkAugment, checkCenterCrop, checkFit, checkSize } from './preprocess'
import type { ImageSource } from './source'
import { TRAINING } from '../tables/training'

/** A gathered batch's tensor and how it becomes network input, by batch. */
const GATHERED = new WeakMap<Batch, { images: BindingImageBatch; transform: BindingBatchTransform }>()

/**
 * Batches of an on-disk (uint8 C-order) {@link NpyDataset}, gathered by the core into one tensor each
 * and augmented on the model's device by the train step: no pixel is decoded, resized or
 * copied in JavaScript. While batch n trains on the model's worker, the gathers of batches
 * n+1…n+prefetch run on the dataset's own thread. The batches it yields have no `pixels`
 * (an empty array); {@link gatheredTrainStep} trains on them.
 */
export class PackedBatchLoader implements AsyncIterable<Batch> {
  readonly source: ImageSource
  readonly #options: LoaderOptions
  readonly #transform: Omit<BindingBatchTransform, 'epoch' | 'batch'>
  readonly #pinned: boolean

  constructor(source: ImageSource, options: LoaderOptions & { pinned?: boolean }) {
    if (!mappedImages(source)) throw new InvalidArgumentError('PackedBatchLoader needs an NpyDataset of uint8 C-order images (read from the file on demand)')
    this.source = source
    checkSize(options?.size)
    if (!options.sampler || typeof options.sampler.epochBatches !== 'function') {
      throw new InvalidArgumentError('options.sampler must be a PKSampler or SequentialSampler')
    }
    const prefetch = options.prefetch ?? TRAINING.prefetch.default
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new InvalidArgumentError(`prefetch must be an integer ≥ 1, got ${String(prefetch)}`)
    const seed = checkSeed(options.seed ?? TRAINING.seed.default)
    const fit = checkFit(options.fit)
    this.#options = { ...options, prefetch, seed }
    this.#transform = {
      augment: options.augment ? checkAugment(options.augment) : undefined,
      centerCrop: checkCenterCrop(options.centerCrop),
      fit,
      seed,
    }
    this.#pinned = options.pinned ?? false
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    const { signal } = this.#options
    signal?.throwIfAborted()
    const images = mappedImages(this.source)!
    const { height, width } = this.#options.size
    yield* prefetched(
      this.#options.sampler.epochBatches(),
      this.#options.prefetch!,
      (sampled) =>
        images.gather(sampled.indices, this.#pinned).then((gathered) => {
          const batch: Batch = {
            pixels: new Uint8Array(0),
            labels: sampled.labels,
            indices: sampled.indices,
            shape: [sampled.indices.length, height, width, 3],
            epoch: sampled.epoch,
            batch: sampled.batch,
          }
          GATHERED.set(batch, { images: gathered, transform: { ...this.#transform, epoch: sampled.epoch, batch: sampled.batch } })
          return batch
        }, (error: unknown) => {
          // A file that shrank under the run, named as a DataError like every bad input.
          throw fromCoreDataError(error, (this.source as NpyDataset).file)
        }),
      signal,
    )
  }
}

/** A {@link PackedBatchLoader} for an on-disk uint8 dataset, else the sharp {@link BatchLoader}. */
export function batchLoader(source: ImageSource, options: LoaderOptions & { device?: string }): AsyncIterable<Batch> {
  if (!mappedImages(source)) return new BatchLoader(source, options)
  return new PackedBatchLoader(source, { ...options, pinned: options.device?.startsWith('cuda') ?? false })
}

/** The train step of a batch from a {@link PackedBatchLoader}; undefined for a pixel batch. */
export function gatheredTrainStep(batch: Batch): ((model: BindingModel, triplets?: Int32Array) => Promise<BindingStepStats>) | undefined {
  const gathered = GATHERED.get(batch)
  if (!gathered) return undefined
  return (model, triplets) => model.trainStepGathered(gathered.images, batch.labels, gathered.transform, triplets)
}
