import type { LfwFold, LfwPairs } from '../data/lfw-pairs'
import type { InputSize } from '../data/preprocess'
import { decodeImages } from '../inference'
import type { IndexPair } from './verification'

export interface PairImagesOptions {
  /** Central fraction of each image kept before resizing; match the training setting. Default `1`. */
  centerCrop?: number
  /** Only these folds (0-based). Default: all. */
  folds?: readonly number[]
}

/** The decoded images of a pairs file and its pairs as indices into them, fold by fold. */
export interface PairImages {
  images: { data: Uint8Array; shape: [number, number, number, 3] }
  /** Absolute path of each image, in image order. */
  paths: string[]
  /** One array of pairs per fold, indexing `images`. */
  pairs: IndexPair[][]
}

/**
 * Decodes every image the chosen folds of an LFW pairs file reference, once each, at
 * `size` (a model's `inputSize`), for `evaluateVerification` or a trainer's validation.
 */
export async function loadPairImages(lfw: LfwPairs, size: InputSize, options: PairImagesOptions = {}): Promise<PairImages> {
  const folds: LfwFold[] = (options.folds ?? lfw.folds.map((_, k) => k)).map((k) => lfw.folds[k]!)
  const index = new Map<string, number>()
  const paths: string[] = []
  const at = (path: string): number => {
    let i = index.get(path)
    if (i === undefined) {
      i = paths.length
      index.set(path, i)
      paths.push(path)
    }
    return i
  }
  const pairs = folds.map((fold) => fold.pairs.map((p) => ({ a: at(p.a), b: at(p.b), same: p.same })))
  const images = await decodeImages(paths, size, { centerCrop: options.centerCrop })
  return { images, paths, pairs }
}
