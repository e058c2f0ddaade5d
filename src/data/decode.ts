/** Image files decoded into pixel batches at a model's input size. */
import { ImageList } from './image-list'
import { BatchLoader, type Batch } from './loader'
import { checkCenterCrop, type InputSize } from './preprocess'
import { SequentialSampler } from './sampler'
import { EVAL } from '../tables/eval'

export interface DecodeOptions {
  /**
   * Central fraction of each image kept before resizing. Use what the model was trained
   * with; `embedFiles` defaults to the model's stored `centerCrop` metadata, else `1`.
   */
  centerCrop?: number
  /** Images decoded (and embedded) per batch. Default `32`. */
  batchSize?: number
}

/** Decoded batches of `paths` at `size`, in order, decoding ahead in parallel. */
export function decodedBatches(paths: readonly string[], size: InputSize, options: DecodeOptions = {}): AsyncIterable<Batch> {
  const source = new ImageList(paths)
  return new BatchLoader(source, {
    size,
    sampler: new SequentialSampler(source, options.batchSize ?? EVAL.batchSize.default),
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
