/**
 * The one loop that embeds images a batch at a time: a loader's decoded batches, or
 * slices of a batch already in memory. A batch crosses into the binding one slice at a
 * time, and each slice is read in place, so a large set never needs a second full copy.
 */
import type { EmbedOptions, FaceNet, ImageBatch } from './model'

/** Images and the rows of the result they fill. */
export interface RowBatch {
  pixels: Uint8Array | Float32Array
  shape: readonly [number, number, number, number]
  /** The row of each image; a loader's item indices. */
  indices: ArrayLike<number>
}

/** `images` as consecutive slices of at most `size` images, row i being image i. */
export function* slices(images: ImageBatch, size: number): Generator<RowBatch> {
  const [n, height, width, channels] = images.shape
  const per = height * width * channels
  for (let start = 0; start < n; start += size) {
    const count = Math.min(size, n - start)
    const indices = Int32Array.from({ length: count }, (_, i) => start + i)
    yield { pixels: images.data.subarray(start * per, (start + count) * per), shape: [count, height, width, channels], indices }
  }
}

/**
 * Embeds every batch into a `rows` × embeddingDim array. `embedded[i]` is 1 where row i
 * was filled: a loader that skips a bad image leaves its row at 0.
 */
export async function embedRows(
  model: FaceNet,
  batches: AsyncIterable<RowBatch> | Iterable<RowBatch>,
  rows: number,
  options: EmbedOptions = {},
): Promise<{ embeddings: Float32Array; embedded: Uint8Array }> {
  const dim = model.embeddingDim
  const embeddings = new Float32Array(rows * dim)
  const embedded = new Uint8Array(rows)
  for await (const batch of batches) {
    const out = await model.embed({ data: batch.pixels, shape: batch.shape }, options)
    for (let i = 0; i < batch.indices.length; i++) {
      const row = batch.indices[i]!
      embeddings.set(out.subarray(i * dim, (i + 1) * dim), row * dim)
      embedded[row] = 1
    }
  }
  return { embeddings, embedded }
}
