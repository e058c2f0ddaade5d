import { DataError } from '../errors'

import type { OnBadImage } from '../options'

/** What to do with a bad image or a bad identity folder. */
export type { OnBadImage }

/** One image that was left out, and why. */
export interface SkippedImage {
  file: string
  reason: string
}

/**
 * Where the pixels of one item come from: an encoded image file, or raw channels-last
 * uint8 pixels already in memory (an `.npy` dataset).
 */
export type ImageInput =
  | { kind: 'file'; path: string }
  | { kind: 'raw'; name: string; data: Buffer; height: number; width: number }

/**
 * A labelled image collection the sampler and loader can read: {@link ImageFolder},
 * {@link NpyDataset}, or {@link ImageList}.
 */
export interface ImageSource {
  /** Identity names; label `i` is `identities[i]`. */
  readonly identities: readonly string[]
  /** The label of each item. */
  readonly labels: Int32Array
  readonly length: number
  /** Where item `index`'s pixels come from. */
  input(index: number): ImageInput | Promise<ImageInput>
}

/** Images per identity, indexed by label. */
export function countLabels(labels: Int32Array, identities: number): Int32Array {
  const counts = new Int32Array(identities)
  for (const label of labels) counts[label]! += 1
  return counts
}

/** Warnings about skipped data go to the process's warning channel by default. */
export function defaultWarn(error: DataError): void {
  process.emitWarning(error.message, { type: 'FaceNetDataWarning', code: error.code })
}

/** Either throws `error` or reports it as a warning and records it in `skipped`. */
export function badData(
  error: DataError,
  mode: OnBadImage,
  skipped: SkippedImage[],
  warn: (error: DataError) => void,
): void {
  if (mode === 'error') throw error
  skipped.push({ file: error.file, reason: error.message })
  warn(error)
}
