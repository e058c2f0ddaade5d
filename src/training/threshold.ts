/**
 * A fine-tune moves the embedding space, so the source model's verification threshold no
 * longer holds: it is chosen again on pairs of held-out identities of the user's own data.
 */
import type { ImageFolder } from '../data/image-folder'
import { decodeImages } from '../data/decode'
import { embedRows, slices } from '../embed-rows'
import { DataError } from '../errors'
import { evaluateVerification, type IndexPair } from '../eval/verification'
import type { FaceNet } from '../model'
import { Rng } from '../rng'
import { TRAINING } from '../tables/training'

export interface HeldOutThreshold {
  /** Squared-L2 distance below which two faces are the same person (best accuracy on the pairs). */
  threshold: number
  /** Accuracy at that threshold on the same pairs (optimistic). */
  accuracy: number
  /** Same-identity and different-identity pairs it was chosen on. */
  pairs: number
  /** The distance the threshold applies to (the verification default). */
  metric: string
}

/** Same-identity pairs of `folder` (up to `perIdentity` each) and as many different-identity pairs, drawn from `seed`. */
export function heldOutPairs(folder: ImageFolder, seed: number, perIdentity = 20): IndexPair[] {
  const rng = new Rng(seed, 0x7e1d)
  const byLabel = new Map<number, number[]>()
  folder.labels.forEach((label, index) => byLabel.set(label, [...(byLabel.get(label) ?? []), index]))
  const same: IndexPair[] = []
  for (const indices of byLabel.values()) {
    const all: IndexPair[] = []
    for (let i = 0; i < indices.length; i++) for (let j = i + 1; j < indices.length; j++) all.push({ a: indices[i]!, b: indices[j]!, same: true })
    for (let k = 0; k < Math.min(perIdentity, all.length); k++) {
      const pick = k + rng.int(all.length - k)
      ;[all[k], all[pick]] = [all[pick]!, all[k]!]
      same.push(all[k]!)
    }
  }
  const different: IndexPair[] = []
  const n = folder.length
  while (different.length < same.length) {
    const a = rng.int(n)
    const b = rng.int(n)
    if (folder.labels[a] !== folder.labels[b]) different.push({ a, b, same: false })
  }
  return [...same, ...different]
}

/** The best-accuracy threshold of `model` on pairs of `folder`'s identities (none of them trained on). */
export async function chooseThreshold(model: FaceNet, folder: ImageFolder, options: { seed?: number; centerCrop?: number } = {}): Promise<HeldOutThreshold> {
  const pairs = heldOutPairs(folder, options.seed ?? TRAINING.seed.default)
  if (!pairs.some((p) => p.same)) {
    throw new DataError(folder.root, 'its held-out identities have no identity with 2 or more images: no same-person pair to choose a threshold on')
  }
  const images = await decodeImages(
    folder.items.map((item) => item.crop ?? item.path),
    model.inputSize,
    { centerCrop: options.centerCrop ?? TRAINING.centerCrop.default },
  )
  const { embeddings } = await embedRows(model, slices(images, 32), folder.length)
  const result = evaluateVerification({ embeddings, dim: model.embeddingDim }, pairs, { folds: Math.min(10, Math.floor(pairs.length / 2)) })
  return { threshold: result.threshold, accuracy: result.thresholdAccuracy, pairs: pairs.length, metric: result.metric }
}
