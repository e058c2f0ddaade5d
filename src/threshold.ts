/** The verification threshold a model file carries (what `facenet eval` stores, or a pretrained model's own). */
import type { FaceNet } from './model'

/**
 * Metadata key of a model's threshold: a squared-L2 distance below which two faces are the
 * same person. `facenet eval` stores the one it calibrates; the pretrained `'dlib-resnet-v1'`
 * carries dlib's (Euclidean 0.6, so 0.36).
 */
export const THRESHOLD_KEY = 'threshold'

/** The threshold stored with `model`, if it has a usable one. */
export function storedThreshold(model: FaceNet): number | undefined {
  const stored = Number(model.metadata[THRESHOLD_KEY])
  return model.metadata[THRESHOLD_KEY] !== undefined && Number.isFinite(stored) && stored > 0 ? stored : undefined
}
