/**
 * The notebook's triplet selection: at each epoch start, embed the whole training set,
 * list every anchor-positive pair with a semi-hard negative, and serve that list in
 * batches.
 */
import { availableParallelism } from 'node:os'
import { BatchLoader } from '../data/loader'
import { Rng } from '../rng'
import { SequentialSampler, type SampledBatch } from '../data/sampler'
import type { ImageSource, OnBadImage } from '../data/source'
import { embedRows } from '../embed-rows'
import { FirstSeen } from '../first-seen'
import { mineChecked } from '../mining'
import type { FaceNet } from '../model'
import type { ResolvedOptions } from './options'

/** Anchors per step of the per-epoch mining pass (memory chunk × N). */
const EPOCH_CHUNK = 1024

/** Serves the batches of an epoch's triplet list (notebook-style mining) to the loader. */
export class TripletListSampler {
  readonly batches: { indices: Int32Array; labels: Int32Array; triplets: Int32Array }[]
  readonly epoch: number
  start = 0

  constructor(source: ImageSource, triplets: { anchors: Int32Array; positives: Int32Array; negatives: Int32Array }, perBatch: number, seed: number, epoch: number) {
    this.epoch = epoch
    const order = new Rng(seed, epoch, 0x7219).shuffle(Int32Array.from({ length: triplets.anchors.length }, (_, i) => i))
    this.batches = []
    for (let start = 0; start < order.length; start += perBatch) {
      const chosen = order.subarray(start, start + perBatch)
      const rows = new FirstSeen<number>()
      const t = chosen.length
      const flat = new Int32Array(3 * t)
      chosen.forEach((k, j) => {
        flat[j] = rows.of(triplets.anchors[k]!)
        flat[t + j] = rows.of(triplets.positives[k]!)
        flat[2 * t + j] = rows.of(triplets.negatives[k]!)
      })
      const idx = Int32Array.from(rows.values)
      this.batches.push({ indices: idx, labels: idx.map((i) => source.labels[i]!), triplets: flat })
    }
  }

  *epochBatches(): Generator<SampledBatch> {
    for (let b = this.start; b < this.batches.length; b++) {
      yield { indices: this.batches[b]!.indices, labels: this.batches[b]!.labels, epoch: this.epoch, batch: b }
    }
  }
}

/** Embeds the whole training set and builds the notebook's per-epoch triplet list. */
export async function epochTriplets(
  model: FaceNet,
  data: ImageSource,
  o: Readonly<ResolvedOptions>,
  onBadImage: OnBadImage,
  epoch: number,
  warn: (message: string) => void,
): Promise<TripletListSampler> {
  const loader = new BatchLoader(data, {
    size: model.inputSize,
    sampler: new SequentialSampler(data, 64),
    centerCrop: o.centerCrop,
    prefetch: o.prefetch,
    onBadImage: onBadImage,
    onWarning: (error) => warn(error.message),
  })
  const dim = model.embeddingDim
  const { embeddings, embedded: present } = await embedRows(model, loader, data.length, { precision: o.precision })
  // Images skipped as bad have no embedding: mine among the others only.
  const kept = present.every((p) => p === 1) ? undefined : Int32Array.from(present.keys()).filter((i) => present[i] === 1)
  const mined = await mineChecked(
    kept ? kept.reduce((sub, item, j) => (sub.set(embeddings.subarray(item * dim, (item + 1) * dim), j * dim), sub), new Float32Array(kept.length * dim)) : embeddings,
    kept ? kept.map((i) => data.labels[i]!) : data.labels,
    dim,
    { miner: o.miner, margin: o.margin, choice: o.choice, fallback: o.fallback, distance: o.distance, seed: o.seed + epoch },
    availableParallelism(),
    EPOCH_CHUNK,
  )
  const triplets = kept ? { anchors: mined.anchors.map((j) => kept[j]!), positives: mined.positives.map((j) => kept[j]!), negatives: mined.negatives.map((j) => kept[j]!) } : mined
  return new TripletListSampler(data, triplets, o.tripletsPerBatch, o.seed, epoch)
  }
