/**
 * MTCNN's detection options: the table `checkDetectOptions` fills in and checks from, and
 * `facenet detect` makes its flags of. The defaults are facenet-pytorch's `MTCNN()`'s.
 */
import { integerIn, MAX_THREADS } from '../check'
import { MAX_PHOTO_PIXELS } from '../data/preprocess'
import { InvalidArgumentError } from '../errors'
import { option, optionTable } from './table'

/**
 * The accepted range of each detection option; values outside are refused with an
 * `InvalidArgumentError` (the CLI's flags use the same bounds). Each bound keeps one
 * photo's detection within a few GB and a finite time:
 * - `minFaceSize` ≥ 12, P-Net's window: smaller faces would need the photo upscaled
 *   (by 12/minFaceSize per side: 1 px means 144× the pixels);
 * - `factor` ≤ 0.95: the pyramid has log(12/side)/log(factor) levels, which grows
 *   without bound as the factor nears 1 (0.999999 is millions of levels);
 * - thresholds ≥ 0.01: at 0 every window of every level is a candidate for R- and O-Net;
 * - `maxPixels` ≤ {@link MAX_PHOTO_PIXELS}; `threads` 1 to {@link MAX_THREADS}.
 */
export const DETECT_BOUNDS = {
  minFaceSize: { min: 12, max: 100_000 },
  factor: { min: 0.1, max: 0.95 },
  threshold: { min: 0.01, max: 1 },
  maxPixels: { min: 1, max: MAX_PHOTO_PIXELS },
  threads: { min: 1, max: MAX_THREADS },
} as const

function numberIn(name: string, value: unknown, bounds: { min: number; max: number }): number {
  if (typeof value !== 'number' || !(value >= bounds.min && value <= bounds.max)) {
    throw new InvalidArgumentError(`${name} must be a number from ${bounds.min} to ${bounds.max}, got ${String(value)}`)
  }
  return value
}

const B = DETECT_BOUNDS

export const DETECT = optionTable({
  minFaceSize: option<number>({
    kind: 'number',
    default: 20,
    check: (name, value) => numberIn(name, value, B.minFaceSize),
    value: 'PX',
    help: `smallest face searched for, ${B.minFaceSize.min} (P-Net's window) or more`,
  }),
  factor: option<number>({ kind: 'number', default: 0.709, check: (name, value) => numberIn(name, value, B.factor), value: 'F', help: `scale step of the image pyramid, ${B.factor.min} to ${B.factor.max}` }),
  thresholds: option<readonly number[]>({
    kind: 'list',
    items: 'number',
    default: [0.6, 0.7, 0.7],
    check: (name, value) => {
      const t: unknown = value
      if (!Array.isArray(t) || t.length !== 3) {
        throw new InvalidArgumentError(`${name} must be three numbers (P-, R-, O-Net) such as [0.6, 0.7, 0.7], got ${t === null ? 'null' : (JSON.stringify(t) ?? String(t))}`)
      }
      return t.map((v: unknown, i) => numberIn(`${name}[${i}]`, v, B.threshold))
    },
    value: 'P,R,O',
    help: `P-, R-, O-Net probability thresholds, each ${B.threshold.min} to ${B.threshold.max}`,
  }),
  maxPixels: option<number>({
    kind: 'number',
    default: MAX_PHOTO_PIXELS,
    check: (name, value) => integerIn(name, value, B.maxPixels.min, B.maxPixels.max),
    value: 'N',
    help: 'photos with more pixels are downscaled for detection, coordinates staying in the original pixels; the most, and the limit align uses too',
  }),
})
