import { ImageList } from './data/image-list'
import { BatchLoader, type Batch } from './data/loader'
import { checkCenterCrop, type InputSize } from './data/preprocess'
import { SequentialSampler } from './data/sampler'
import { checkKeys } from './errors'
import type { FaceNet } from './model'

export interface DecodeOptions {
  /**
   * Central fraction of each image kept before resizing. Use what the model was trained
   * with; `embedFiles` defaults to the model's stored `centerCrop` metadata, else `1`.
   */
  centerCrop?: number
  /** Images decoded (and embedded) per batch. Default `32`. */
  batchSize?: number
}

/** Metadata key under which a model file records the center crop it was trained with. */
export const CENTER_CROP_KEY = 'centerCrop'

/** The center crop stored with a model (see {@link CENTER_CROP_KEY}), else `1`. */
export function storedCenterCrop(model: FaceNet): number {
  const stored = Number(model.metadata[CENTER_CROP_KEY])
  return Number.isFinite(stored) && stored > 0 && stored <= 1 ? stored : 1
}

/** Decoded batches of `paths` at `size`, in order, decoding ahead in parallel. */
export function decodedBatches(paths: readonly string[], size: InputSize, options: DecodeOptions = {}): AsyncIterable<Batch> {
  const source = new ImageList(paths)
  return new BatchLoader(source, {
    size,
    sampler: new SequentialSampler(source, options.batchSize ?? 32),
    centerCrop: checkCenterCrop(options.centerCrop),
  })
}

/** Decodes image files into one N×H×W×3 uint8 batch at `size`. */
export async function decodeImages(
  paths: readonly string[],
  size: InputSize,
  options: DecodeOptions = {},
): Promise<{ data: Uint8Array; shape: [number, number, number, 3] }> {
  const per = size.height * size.width * 3
  const data = new Uint8Array(paths.length * per)
  for await (const batch of decodedBatches(paths, size, { batchSize: 128, ...options })) {
    batch.indices.forEach((item, row) => data.set(batch.pixels.subarray(row * per, (row + 1) * per), item * per))
  }
  return { data, shape: [paths.length, size.height, size.width, 3] }
}

/**
 * Decodes image files (JPEG, PNG, WebP) at the model's input size and embeds them:
 * N × embeddingDim rows, in the order of `paths`. Decoding of the next batch overlaps the
 * forward pass of the current one.
 */
export async function embedFiles(model: FaceNet, paths: readonly string[], options: DecodeOptions = {}): Promise<Float32Array> {
  checkKeys('embedFiles', options, ['centerCrop', 'batchSize'])
  const dim = model.embeddingDim
  const out = new Float32Array(paths.length * dim)
  const centerCrop = options.centerCrop ?? storedCenterCrop(model)
  for await (const batch of decodedBatches(paths, model.inputSize, { ...options, centerCrop })) {
    const rows = await model.embed({ data: batch.pixels, shape: batch.shape })
    batch.indices.forEach((item, row) => out.set(rows.subarray(row * dim, (row + 1) * dim), item * dim))
  }
  return out
}
