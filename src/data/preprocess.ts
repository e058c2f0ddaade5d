import sharp, { type Sharp } from 'sharp'
import { DataError, InvalidArgumentError } from '../errors'
import type { Rng } from './rng'
import type { ImageInput } from './source'
import { readRegularFile, regularFileSize } from '../regular-file'
import { AUGMENT } from '../tables/augment'
import { FITS, quotedList, type Fit } from '../options'
import { resolveOption } from '../tables/table'

/** The network's input size, e.g. a model's `info.inputSize`. */
export interface InputSize {
  height: number
  width: number
}

export type { Fit } from '../options'

/** A loader's `fit`: one of {@link FITS}, `'cover'` (keep the aspect ratio, crop the centre) when unset. */
export function checkFit(fit: unknown): Fit {
  const value = fit ?? FITS[0]
  if (!(FITS as readonly unknown[]).includes(value)) throw new InvalidArgumentError(`fit must be ${quotedList(FITS)}, got ${String(value)}`)
  return value as Fit
}

/** Random augmentation, drawn per image from the loader's seed. */
export interface AugmentOptions {
  /**
   * Random crop: the crop's side is a fraction of the image drawn uniformly from
   * [`cropScale`, 1], placed at a random position, then resized to the input size.
   * Default `0.875` (e.g. a 160 crop of a 183 resize). `1` disables cropping.
   */
  cropScale?: number
  /** Horizontal flip with probability ½. Default `true`. */
  flip?: boolean
  /** Rotation by an angle drawn from [−maxRotation, maxRotation] degrees. Default `0` (off). */
  maxRotation?: number
  /** Brightness factor drawn from [1 − brightness, 1 + brightness]. Default `0` (off). */
  brightness?: number
}

/** The augmentation applied to one image; {@link drawTransform} draws one. */
export interface Transform {
  /** Crop side as a fraction of the image, in (0, 1]. */
  scale: number
  /** Crop position in [0, 1] along x and y (0 = left/top edge). */
  x: number
  y: number
  flip: boolean
  /** Degrees, counter-clockwise positive as in sharp. */
  rotation: number
  brightness: number
}

export const IDENTITY_TRANSFORM: Transform = { scale: 1, x: 0.5, y: 0.5, flip: false, rotation: 0, brightness: 1 }

export function checkAugment(options: AugmentOptions): Required<AugmentOptions> {
  const value = <K extends keyof typeof AUGMENT>(key: K) => resolveOption(AUGMENT, key, options, `augment.${key}`)
  return { cropScale: value('cropScale'), flip: value('flip'), maxRotation: value('maxRotation'), brightness: value('brightness') }
}

export function checkSize(size: InputSize): InputSize {
  for (const key of ['height', 'width'] as const) {
    const v = size?.[key]
    if (!Number.isInteger(v) || v < 1 || v > 4096) throw new InvalidArgumentError(`size.${key} must be an integer 1..4096, got ${String(v)}`)
  }
  return { height: size.height, width: size.width }
}

/**
 * Restricts a transform to the central `fraction` of the image (a fixed face crop, e.g.
 * 0.7 of a 150×150 LFW image), keeping the transform's relative crop size and position
 * inside that region. Training and evaluation must use the same fraction.
 */
export function withCenterCrop(transform: Transform, fraction: number): Transform {
  if (fraction === 1) return transform
  const scale = transform.scale * fraction
  const slack = 1 - scale
  const place = (t: number) => (slack <= 0 ? 0.5 : ((1 - fraction) / 2 + t * fraction * (1 - transform.scale)) / slack)
  return { ...transform, scale, x: place(transform.x), y: place(transform.y) }
}

export function checkCenterCrop(fraction: number | undefined): number {
  const f = fraction ?? 1
  if (typeof f !== 'number' || !(f > 0 && f <= 1)) throw new InvalidArgumentError(`centerCrop must be in (0, 1], got ${String(f)}`)
  return f
}

/** Draws one image's augmentation. The draw order is fixed, so a seed gives the same transforms. */
export function drawTransform(rng: Rng, augment: Required<AugmentOptions>): Transform {
  const scale = augment.cropScale < 1 ? rng.uniform(augment.cropScale, 1) : 1
  const x = rng.next()
  const y = rng.next()
  const flip = augment.flip ? rng.next() < 0.5 : false
  const rotation = augment.maxRotation > 0 ? rng.uniform(-augment.maxRotation, augment.maxRotation) : 0
  const brightness = augment.brightness > 0 ? rng.uniform(1 - augment.brightness, 1 + augment.brightness) : 1
  return { scale, x, y, flip, rotation, brightness }
}

/**
 * The most pixels (width × height, from the file's header) an image file may declare;
 * larger ones are refused before decoding with a {@link DataError}. A guard against
 * decompression bombs: a few-kB PNG or JPEG can declare gigapixels, and the loader decodes
 * many images at once. 8192×8192 (about 200 MB decoded) is far above any face crop.
 */
export const MAX_IMAGE_PIXELS = 8192 * 8192

// 'warning' also rejects truncated JPEGs, which libjpeg would otherwise pad with grey.
const SHARP_INPUT = { failOn: 'warning', limitInputPixels: MAX_IMAGE_PIXELS } as const

function decodeProblem(cause: unknown): string {
  const message = (cause as Error).message
  if (/exceeds pixel limit/.test(message)) return `declares more than ${MAX_IMAGE_PIXELS} pixels (MAX_IMAGE_PIXELS, a decompression-bomb guard)`
  return `cannot be decoded as an image (${message})`
}

async function readImageFile(path: string): Promise<Buffer> {
  let bytes: Buffer
  try {
    bytes = await readRegularFile(path)
  } catch (cause) {
    if (cause instanceof DataError) throw cause
    throw new DataError(path, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  }
  if (bytes.length === 0) throw new DataError(path, 'is empty (0 bytes)')
  return bytes
}

function open(input: ImageInput): Sharp {
  // libvips reads the file itself, inside the same pool task: one libuv round trip per
  // image instead of fs.readFile's open/stat/read/close.
  if (input.kind === 'file') return sharp(input.path, SHARP_INPUT).autoOrient()
  return sharp(input.data, { raw: { width: input.width, height: input.height, channels: 3 }, limitInputPixels: false })
}

function name(input: ImageInput): string {
  return input.kind === 'file' ? input.path : input.name
}

/**
 * Decodes one image and turns it into `size.height × size.width × 3` uint8 RGB,
 * channels last, applying `transform` (none by default). Grayscale becomes 3 equal
 * channels; alpha is dropped. All pixel work runs in libvips on libuv's pool.
 * Errors are {@link DataError}s naming the file.
 */
export async function preprocessImage(
  input: ImageInput,
  size: InputSize,
  transform: Transform = IDENTITY_TRANSFORM,
  fit: Fit = FITS[0],
): Promise<Buffer> {
  try {
    let img = open(input)
    if (transform.rotation !== 0) {
      // sharp grows the canvas to hold the rotated image; cut the original extent back out
      // of its centre, so the rotation does not shrink the face.
      const rotated = await img
        .rotate(transform.rotation, { background: { r: 0, g: 0, b: 0 } })
        .removeAlpha()
        .toColourspace('srgb')
        .raw()
        .toBuffer({ resolveWithObject: true })
      const { width: wr, height: hr } = rotated.info
      const rad = (Math.abs(transform.rotation) * Math.PI) / 180
      const c = Math.cos(rad)
      const s = Math.sin(rad)
      const d = c * c - s * s
      const w0 = Math.max(1, Math.min(wr, Math.round((wr * c - hr * s) / d)))
      const h0 = Math.max(1, Math.min(hr, Math.round((hr * c - wr * s) / d)))
      img = sharp(rotated.data, { raw: { width: wr, height: hr, channels: 3 }, limitInputPixels: false }).extract({
        left: Math.floor((wr - w0) / 2),
        top: Math.floor((hr - h0) / 2),
        width: w0,
        height: h0,
      })
    }
    const { height, width } = size
    if (transform.scale < 1) {
      // Resize so the crop window becomes the input size, then cut it out.
      const wc = Math.max(width, Math.round(width / transform.scale))
      const hc = Math.max(height, Math.round(height / transform.scale))
      img = img.resize(wc, hc, { fit }).extract({
        left: Math.min(wc - width, Math.floor(transform.x * (wc - width + 1))),
        top: Math.min(hc - height, Math.floor(transform.y * (hc - height + 1))),
        width,
        height,
      })
    } else {
      img = img.resize(width, height, { fit })
    }
    if (transform.flip) img = img.flop()
    if (transform.brightness !== 1) img = img.linear(transform.brightness, 0)
    const { data, info } = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true })
    if (info.width !== width || info.height !== height || info.channels !== 3 || data.length !== width * height * 3) {
      throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${width}×${height}×3`)
    }
    return data
  } catch (cause) {
    if (cause instanceof DataError) throw cause
    if (input.kind === 'file') {
      // Say whether the file is missing or empty rather than relaying libvips' guess.
      await readImageFile(input.path)
    }
    throw new DataError(name(input), decodeProblem(cause), { cause })
  }
}

/** Fully decodes `path`; returns why it is bad, or undefined when it is a good image. */
export async function decodeCheck(path: string): Promise<string | undefined> {
  try {
    const bytes = await readImageFile(path)
    await sharp(bytes, SHARP_INPUT).raw().toBuffer()
    return undefined
  } catch (error) {
    if (error instanceof DataError) return error.message.slice(path.length + 2)
    return decodeProblem(error)
  }
}

/**
 * The most pixels a photo is decoded at for detection and alignment (4096 × 4096, 16.8 MP:
 * every phone photo at full size). `detectFiles` and `alignFaces` share it, and this
 * decoder, so one photo gets the same boxes from both.
 */
export const MAX_PHOTO_PIXELS = 4096 * 4096

/** A photo decoded at its own size: H×W×3 uint8 RGB, channels last. */
export interface DecodedPhoto {
  data: Buffer
  height: number
  width: number
  /**
   * Decoded pixels per pixel of the file, across and down: below 1 when the photo was
   * downscaled. The two differ slightly, as each side is rounded to whole pixels.
   */
  scaleX: number
  scaleY: number
}

/**
 * Decodes a whole photo (JPEG, PNG, WebP; EXIF orientation applied) to RGB: grayscale
 * becomes 3 equal channels, CMYK is converted, alpha is dropped. A photo of more than
 * `maxPixels` pixels is downscaled (aspect kept) to fit under it. Errors are
 * {@link DataError}s naming the file.
 */
export async function decodePhoto(path: string, maxPixels: number): Promise<DecodedPhoto> {
  // libvips opens the path itself: a FIFO would block it and /dev/zero fill memory.
  await regularFileSize(path)
  try {
    const img = sharp(path, SHARP_INPUT).autoOrient()
    const meta = await img.metadata()
    // autoOrient swaps the sides of EXIF orientations 5–8.
    const swapped = (meta.orientation ?? 1) >= 5
    const width = (swapped ? meta.height : meta.width) ?? 0
    const height = (swapped ? meta.width : meta.height) ?? 0
    const scale = width * height > maxPixels ? Math.sqrt(maxPixels / (width * height)) : 1
    const sized = scale < 1 ? img.resize(Math.max(1, Math.floor(width * scale)), Math.max(1, Math.floor(height * scale)), { fit: 'fill' }) : img
    const { data, info } = await sized.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true })
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`)
    return { data, height: info.height, width: info.width, scaleX: info.width / Math.max(1, width), scaleY: info.height / Math.max(1, height) }
  } catch (cause) {
    if (cause instanceof DataError) throw cause
    await readImageFile(path)
    throw new DataError(path, decodeProblem(cause), { cause })
  }
}
