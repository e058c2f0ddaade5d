/**
 * Face alignment (the crop each detected face becomes): the table `resolveAlign` fills in
 * and checks from, and `facenet align` (and `--align-*` of embed, compare, identify, cluster,
 * eval) make their flags of.
 */
import { nonNegative, positiveInteger } from '../check'
import { MAX_PHOTO_PIXELS } from '../data/preprocess'
import { InvalidArgumentError } from '../errors'
import { ALIGN_MODES, FACE_SELECTIONS, ON_BAD_IMAGE, type AlignMode, type FaceSelection, type OnBadImage } from '../options'
import { option, optionTable } from './table'

/**
 * The largest crop side. Each crop is warped in float32 with its sampling grid, about
 * 20 bytes a pixel: 20 MB at 1024, but 340 MB at 4096, times every face of a round.
 * Face models take 96 to 224 pixels.
 */
export const ALIGN_MAX_SIZE = 1024

/** The side of dlib's face chip, which `'dlib'` mode makes unless told otherwise. */
export const DLIB_CHIP_SIZE = 150

export const ALIGN = optionTable({
  size: option<number>({
    kind: 'number',
    default: 160,
    check: (name, value) => {
      if (!Number.isInteger(value) || value < 1 || value > ALIGN_MAX_SIZE) throw new InvalidArgumentError(`${name} must be an integer 1..${ALIGN_MAX_SIZE}, got ${String(value)}`)
      return value
    },
    value: 'N',
    help: `side of the square crops in pixels, 1 to ${ALIGN_MAX_SIZE}; facenet-pytorch's image_size, ${DLIB_CHIP_SIZE} in dlib mode`,
  }),
  mode: option<AlignMode>({
    kind: 'enum',
    values: ALIGN_MODES,
    default: 'template',
    value: 'MODE',
    help: "crop placement (template: 5-point similarity onto the ArcFace template; margin: facenet-pytorch's box + margin; dlib: dlib's face chip)",
  }),
  margin: option<number>({ kind: 'number', default: 0, check: nonNegative, value: 'PX', help: "margin of margin mode in crop pixels, below the size; 0 is facenet-pytorch's" }),
  faces: option<FaceSelection>({ kind: 'enum', values: FACE_SELECTIONS, default: 'all', value: 'WHICH', help: 'which faces of a photo (largest: one crop per photo; all: every face, NAME_1.jpg, NAME_2.jpg… beside NAME.jpg)', cli: { default: 'largest' } }),
  batchSize: option<number>({
    kind: 'number',
    default: 32,
    check: positiveInteger,
    value: 'N',
    help: 'photos decoded, detected and warped per round (bounds memory)',
  }),
  maxPixels: option<number>({
    kind: 'number',
    default: MAX_PHOTO_PIXELS,
    check: (name, value) => {
      if (!Number.isInteger(value) || value < 1 || value > MAX_PHOTO_PIXELS) throw new InvalidArgumentError(`${name} must be an integer from 1 to ${MAX_PHOTO_PIXELS}, got ${String(value)}`)
      return value
    },
    help: 'photos with more pixels are downscaled before detection',
    cli: { noFlag: 'facenet align uses the limit facenet detect does' },
  }),
  onBadImage: option<OnBadImage>({ kind: 'enum', values: ON_BAD_IMAGE, default: 'error', value: 'WHAT', help: 'a file that cannot be decoded (error: stop with a DataError naming it; skip: list it in the summary)' }),
})
