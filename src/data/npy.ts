import { open, readFile, stat, type FileHandle } from 'node:fs/promises'
import { resolve } from 'node:path'
import sharp from 'sharp'
import type { BindingNpyImages } from '../../index'
import { DataError, bindingError, fromBindingError, InvalidArgumentError } from '../errors'
import { countLabels, type ImageInput, type ImageSource } from './source'
import { notRegularProblem } from '../regular-file'

/** A parsed `.npy` array: its dtype descriptor, shape, order, and data bytes. */
export interface NpyArray {
  descr: string
  fortranOrder: boolean
  shape: number[]
  /** The data, exactly `product(shape) × itemsize` bytes. */
  data: Buffer
}

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]) // \x93NUMPY

/** Parses the header's Python dict literal; only what numpy writes is accepted. */
function parseHeaderDict(text: string, file: string): { descr: string; fortran_order: boolean; shape: number[] } {
  let i = 0
  const fail = (what: string): never => {
    throw new DataError(file, `malformed .npy header (${what} at offset ${i}): ${JSON.stringify(text.trim())}`)
  }
  const ws = (): void => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t')) i++
  }
  const expect = (ch: string): void => {
    ws()
    if (text[i] !== ch) fail(`expected '${ch}'`)
    i++
  }
  const str = (): string => {
    ws()
    const q = text[i]
    if (q !== "'" && q !== '"') fail('expected a string')
    const end = text.indexOf(q!, i + 1)
    if (end < 0) fail('unterminated string')
    const s = text.slice(i + 1, end)
    i = end + 1
    return s
  }
  const value = (): unknown => {
    ws()
    if (text.startsWith('True', i)) return (i += 4), true
    if (text.startsWith('False', i)) return (i += 5), false
    if (text[i] === "'" || text[i] === '"') return str()
    if (text[i] === '(') {
      i++
      const dims: number[] = []
      for (;;) {
        ws()
        if (text[i] === ')') break
        const m = /^\d+/.exec(text.slice(i))
        if (!m) fail('expected a non-negative integer in shape')
        dims.push(Number(m![0]))
        i += m![0].length
        ws()
        if (text[i] === ',') i++
        else if (text[i] !== ')') fail("expected ',' or ')'")
      }
      i++
      return dims
    }
    return fail('expected a value')
  }
  const dict: Record<string, unknown> = {}
  expect('{')
  for (;;) {
    ws()
    if (text[i] === '}') break
    const key = str()
    expect(':')
    if (key in dict) fail(`duplicate key '${key}'`)
    dict[key] = value()
    ws()
    if (text[i] === ',') i++
    else if (text[i] !== '}') fail("expected ',' or '}'")
  }
  i++
  if (text.slice(i).trim() !== '') fail('trailing characters')
  const keys = Object.keys(dict).sort().join(',')
  if (keys !== 'descr,fortran_order,shape') fail(`keys must be descr, fortran_order, shape; got ${keys}`)
  if (typeof dict.descr !== 'string') fail("'descr' must be a string")
  if (typeof dict.fortran_order !== 'boolean') fail("'fortran_order' must be True or False")
  if (!Array.isArray(dict.shape)) fail("'shape' must be a tuple")
  return dict as { descr: string; fortran_order: boolean; shape: number[] }
}

const ITEM_SIZES: Record<string, number> = { u1: 1, i1: 1, b1: 1, f4: 4, f8: 8, u2: 2, i2: 2, f2: 2, u4: 4, i4: 4, u8: 8, i8: 8 }

/** Bytes per element of a dtype descriptor such as `<f4`, `|u1` or `<U12`. */
export function itemSize(descr: string, file = '.npy'): number {
  const m = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr)
  if (!m) throw new DataError(file, `unsupported dtype ${JSON.stringify(descr)} (object arrays are pickles and cannot be read; save strings with dtype=str)`)
  const [, , kind, n] = m as unknown as [string, string, string, string]
  if (kind === 'U') return 4 * Number(n)
  if (kind === 'S') return Number(n)
  const size = ITEM_SIZES[`${kind}${n}`]
  if (size === undefined) throw new DataError(file, `unsupported dtype ${JSON.stringify(descr)}`)
  return size
}

interface NpyHeader {
  descr: string
  fortranOrder: boolean
  shape: number[]
  /** Where the data starts. */
  dataOffset: number
}

/** Reads the header from the first bytes of an `.npy` (`length`: the whole file's size). */
function parseNpyHeader(bytes: Buffer, length: number, file: string): NpyHeader {
  if (bytes.length < 10 || !bytes.subarray(0, 6).equals(MAGIC)) throw new DataError(file, 'is not an .npy file (bad magic bytes)')
  const major = bytes[6]!
  if (major < 1 || major > 3) throw new DataError(file, `unsupported .npy format version ${major}.${bytes[7]}`)
  const lenBytes = major === 1 ? 2 : 4
  if (bytes.length < 8 + lenBytes) throw new DataError(file, 'truncated .npy header')
  const headerLen = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8)
  const dataOffset = 8 + lenBytes + headerLen
  if (length < dataOffset || bytes.length < dataOffset) throw new DataError(file, `truncated .npy header: needs ${dataOffset} bytes, file has ${length}`)
  const header = bytes.subarray(8 + lenBytes, dataOffset).toString(major === 3 ? 'utf8' : 'latin1')
  if (!header.endsWith('\n')) throw new DataError(file, 'malformed .npy header (not terminated by a newline)')
  const dict = parseHeaderDict(header, file)
  const size = itemSize(dict.descr, file)
  const count = dict.shape.reduce((a, b) => a * b, 1)
  const expected = count * size
  const actual = length - dataOffset
  if (actual < expected) {
    throw new DataError(file, `truncated data: shape (${dict.shape.join(', ')}) of ${dict.descr} needs ${expected} bytes, file has ${actual}`)
  }
  if (actual > expected) throw new DataError(file, `${actual - expected} unexpected bytes after the data of shape (${dict.shape.join(', ')})`)
  return { descr: dict.descr, fortranOrder: dict.fortran_order, shape: dict.shape, dataOffset }
}

/** Parses an `.npy` file's bytes (format versions 1, 2 and 3). Strict: every inconsistency is a {@link DataError}. */
export function parseNpy(bytes: Buffer, file = '.npy'): NpyArray {
  const { descr, fortranOrder, shape, dataOffset } = parseNpyHeader(bytes, bytes.length, file)
  return { descr, fortranOrder, shape, data: bytes.subarray(dataOffset) }
}

/** Numpy's own headers are a few hundred bytes; a longer one is read whole if it exists. */
const HEADER_PROBE = 64 * 1024

/** Reads and checks only the header of the `.npy` at `path`, and its data length against the file's size. */
async function readNpyHeader(path: string): Promise<NpyHeader & { fileSize: number }> {
  let handle: FileHandle | undefined
  try {
    const info = await stat(path)
    // A FIFO or device would be read without end; a regular file can be sized first.
    const special = notRegularProblem(info)
    if (special) throw new DataError(path, special)
    handle = await open(path, 'r')
    let probe = Buffer.alloc(Math.min(info.size, HEADER_PROBE))
    await handle.read(probe, 0, probe.length, 0)
    const declared = probe.length >= 12 && probe[6] !== 1 ? 12 + probe.readUInt32LE(8) : 0
    if (declared > probe.length && declared <= info.size) {
      probe = Buffer.alloc(declared)
      await handle.read(probe, 0, declared, 0)
    }
    return { ...parseNpyHeader(probe, info.size, path), fileSize: info.size }
  } catch (cause) {
    if (cause instanceof DataError) throw cause
    throw new DataError(path, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  } finally {
    await handle?.close()
  }
}

/** The largest file Node reads into one Buffer (fs.readFile's limit, 2 GiB − 1). */
export const MAX_NPY_BYTES = 2 ** 31 - 1

async function readNpy(path: string): Promise<NpyArray> {
  let bytes: Buffer
  try {
    const info = await stat(path)
    // A FIFO or device would be read without end; a regular file can be sized first.
    const special = notRegularProblem(info)
    if (special) throw new DataError(path, special)
    if (info.size > MAX_NPY_BYTES) {
      throw new DataError(
        path,
        `is ${(info.size / 2 ** 30).toFixed(2)} GiB; only uint8 C-order images are read from the file on demand, other .npy files are read into memory, up to 2 GiB`,
      )
    }
    bytes = await readFile(path)
  } catch (cause) {
    if (cause instanceof DataError) throw cause
    throw new DataError(path, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  }
  return parseNpy(bytes, path)
}

/** Images of any supported dtype as uint8 values, in the file's order. */
function toUint8(array: NpyArray, file: string): Buffer {
  const { descr, data } = array
  const kind = descr.slice(1)
  if (kind === 'u1') return data
  if (kind !== 'f4' && kind !== 'f8') {
    throw new DataError(file, `images must be uint8, float32 or float64 (0..255), got dtype ${descr}`)
  }
  const bytes = kind === 'f4' ? 4 : 8
  let src = data
  if (descr[0] === '>') {
    // Big-endian: swap bytes natively rather than element by element.
    src = Buffer.from(data)
    if (bytes === 4) src.swap32()
    else src.swap64()
  }
  // A typed-array view needs an aligned offset; copy into a fresh ArrayBuffer otherwise.
  const view = src.byteOffset % bytes === 0 ? src : new Uint8Array(src)
  const buffer = view.buffer
  const offset = view.byteOffset
  const floats = bytes === 4 ? new Float32Array(buffer, offset, src.length / 4) : new Float64Array(buffer, offset, src.length / 8)
  // Values outside 0..255 mean another scale (0..1, −1..1, normalized): clamping would
  // silently train on other images.
  for (let i = 0; i < floats.length; i++) {
    const v = floats[i]!
    if (!(v >= 0 && v <= 255)) throw new DataError(file, `pixel ${i} is ${v}; float images must hold values in 0..255`)
  }
  // The typed-array constructor converts in native code: round half to even.
  const clamped = new Uint8ClampedArray(floats)
  return Buffer.from(clamped.buffer, clamped.byteOffset, clamped.length)
}

function decodeStrings(array: NpyArray, file: string): string[] {
  const { descr, shape, data } = array
  if (shape.length !== 1) throw new DataError(file, `names must be one-dimensional, got shape (${shape.join(', ')})`)
  const n = shape[0]!
  const kind = descr[1]
  if (kind !== 'U' && kind !== 'S') throw new DataError(file, `names must be numpy strings (dtype <U.. or |S..), got ${descr}`)
  const size = itemSize(descr, file)
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    const item = data.subarray(i * size, (i + 1) * size)
    let s: string
    if (kind === 'S') {
      s = item.toString('latin1')
    } else {
      const codePoints: number[] = []
      for (let j = 0; j < size; j += 4) {
        const code = descr[0] === '>' ? item.readUInt32BE(j) : item.readUInt32LE(j)
        if (code > 0x10ffff) throw new DataError(file, `name ${i} holds ${code}, which is not a Unicode code point`)
        codePoints.push(code)
      }
      s = String.fromCodePoint(...codePoints)
    }
    // numpy pads fixed-width strings with NULs.
    out.push(s.replace(/\0+$/, ''))
  }
  return out
}

export interface NpyDatasetPaths {
  /** `images.npy`: N×H×W×3, uint8 / float32 / float64 (values 0..255), C or Fortran order. */
  images: string
  /** `names.npy`: N numpy unicode strings, the identity of each image. */
  names: string
}

/** The mapped images of each {@link NpyDataset} opened through the core, for the packed loader. */
const MAPPED = new WeakMap<NpyDataset, BindingNpyImages>()

/** The core's open images file behind `source`, when it is an {@link NpyDataset} of uint8 C-order images. */
export function mappedImages(source: ImageSource): BindingNpyImages | undefined {
  return source instanceof NpyDataset ? MAPPED.get(source) : undefined
}

/** The core's DataError (its message starts with the file) as a {@link DataError} naming `file`. */
export function fromCoreDataError(error: unknown, file: string): unknown {
  const coded = bindingError(error)
  if (coded?.code !== 'ERR_DATA') return fromBindingError(error)
  const { message } = coded
  return new DataError(file, message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message, { cause: error })
}

/**
 * The notebook's dataset format: all images in one `.npy` array and their identity names
 * in another (what `facenet pack` writes). uint8 C-order images stay on disk, read by the
 * core row by row as batches need them: opening reads only the header, a 40 GB file opens
 * with the resident set bounded, and `Trainer.fit` gathers and augments its batches
 * natively. The rows are read rather than memory-mapped so that a file truncated by
 * another process is a {@link DataError} naming it, not a SIGBUS. Other dtypes and Fortran
 * order are read into memory (up to 2 GiB) and converted to uint8.
 */
export class NpyDataset implements ImageSource {
  readonly file: string
  readonly identities: readonly string[]
  readonly labels: Int32Array
  /** Images per identity, indexed by label. */
  readonly counts: Int32Array
  /** The name stored for each image. */
  readonly names: readonly string[]
  readonly height: number
  readonly width: number
  readonly fortranOrder: boolean
  /** Whether the images are read from the file on demand (uint8, C order) rather than held in memory. */
  readonly mapped: boolean
  readonly #pixels: Buffer | BindingNpyImages
  readonly length: number

  private constructor(file: string, names: string[], pixels: Buffer | BindingNpyImages, shape: number[], fortranOrder: boolean) {
    this.file = file
    this.names = names
    this.identities = [...new Set(names)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const index = new Map(this.identities.map((name, i) => [name, i]))
    this.labels = Int32Array.from(names, (name) => index.get(name)!)
    this.counts = countLabels(this.labels, this.identities.length)
    this.length = shape[0]!
    this.height = shape[1]!
    this.width = shape[2]!
    this.fortranOrder = fortranOrder
    this.#pixels = pixels
    this.mapped = !Buffer.isBuffer(pixels)
    if (!Buffer.isBuffer(pixels)) MAPPED.set(this, pixels)
  }

  static async open(paths: NpyDatasetPaths): Promise<NpyDataset> {
    if (typeof paths?.images !== 'string' || typeof paths?.names !== 'string') {
      throw new InvalidArgumentError('NpyDataset.open needs { images, names } file paths')
    }
    const imagesFile = resolve(paths.images)
    const namesFile = resolve(paths.names)
    const [header, namesArray] = await Promise.all([readNpyHeader(imagesFile), readNpy(namesFile)])
    const { shape, descr, fortranOrder } = header
    if (shape.length !== 4 || shape[3] !== 3) {
      throw new DataError(imagesFile, `images must have shape (N, H, W, 3), got (${shape.join(', ')})`)
    }
    if (shape[1]! < 1 || shape[2]! < 1) throw new DataError(imagesFile, `images have an empty height or width: (${shape.join(', ')})`)
    const names = decodeStrings(namesArray, namesFile)
    if (names.length !== shape[0]) {
      throw new DataError(namesFile, `has ${names.length} names but ${imagesFile} has ${shape[0]} images`)
    }
    if (names.some((n) => n === '')) throw new DataError(namesFile, 'has an empty name')
    if (descr.slice(1) === 'u1' && !fortranOrder) {
      // Loaded here, not at import: reading other datasets needs no libtorch.
      const { binding } = await import('../binding')
      let mapped: BindingNpyImages
      try {
        mapped = binding.openNpyImages(imagesFile)
      } catch (error) {
        throw fromCoreDataError(error, imagesFile)
      }
      return new NpyDataset(imagesFile, names, mapped, shape, false)
    }
    if (header.fileSize > MAX_NPY_BYTES) {
      throw new DataError(
        imagesFile,
        `is ${(header.fileSize / 2 ** 30).toFixed(2)} GiB of ${descr}${fortranOrder ? ' in Fortran order' : ''}; only uint8 C-order .npy files are read from the file on demand, others are read into memory up to 2 GiB: convert it (numpy: np.ascontiguousarray(images.astype(np.uint8))) or repack it with facenet pack`,
      )
    }
    const images = await readNpy(imagesFile)
    return new NpyDataset(imagesFile, names, toUint8(images, imagesFile), shape, images.fortranOrder)
  }

  async input(index: number): Promise<ImageInput> {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      throw new InvalidArgumentError(`item index ${index} is out of range 0..${this.length - 1}`)
    }
    const { height: h, width: w } = this
    const name = `${this.file}[${index}]`
    const plane = h * w * 3
    const pixels = this.#pixels
    if (!Buffer.isBuffer(pixels)) {
      let row: Uint8Array
      try {
        row = await pixels.read(Int32Array.of(index))
      } catch (error) {
        throw fromCoreDataError(error, this.file)
      }
      return { kind: 'raw', name, data: Buffer.from(row.buffer, row.byteOffset, row.byteLength), height: h, width: w }
    }
    if (!this.fortranOrder) {
      return { kind: 'raw', name, data: pixels.subarray(index * plane, (index + 1) * plane), height: h, width: w }
    }
    return { kind: 'raw', name, data: await this.#fortranImage(index), height: h, width: w }
  }

  /**
   * Gathers image `n` of a Fortran-order array with libvips, not a JS loop. In memory the
   * array is C-order (3, W, H, N): one column of an N-wide image holds image n as
   * (c, w, h); transposing each channel plane and joining them gives (h, w, c).
   */
  async #fortranImage(n: number): Promise<Buffer> {
    const { height: h, width: w, length: count } = this
    const raw = (width: number, height: number) => ({ raw: { width, height, channels: 1 as const }, limitInputPixels: false as const })
    const column = await sharp(this.#pixels as Buffer, raw(count, 3 * w * h))
      .extract({ left: n, top: 0, width: 1, height: 3 * w * h })
      .extractChannel(0)
      .raw()
      .toBuffer()
    // (c·W + w) rows × h columns → transpose: h rows × (c·W + w) columns.
    // sharp flips before it rotates, whatever the call order: flip + 90° = transpose.
    const transposed = await sharp(column, raw(h, 3 * w)).flip().rotate(90).extractChannel(0).raw().toBuffer()
    const planes = await Promise.all(
      [0, 1, 2].map((c) => sharp(transposed, raw(3 * w, h)).extract({ left: c * w, top: 0, width: w, height: h }).extractChannel(0).raw().toBuffer()),
    )
    return sharp(planes[0]!, raw(w, h))
      .joinChannel([planes[1]!, planes[2]!], raw(w, h))
      .raw()
      .toBuffer()
  }
}

/**
 * The header of a C-order `.npy` (format 1.0): magic, version, a little-endian header
 * length, then a Python dict literal padded with spaces to a multiple of 64 bytes.
 */
export function npyHeader(descr: string, shape: readonly number[]): Buffer {
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
  const total = Math.ceil((10 + dict.length + 1) / 64) * 64
  const header = Buffer.alloc(total, 0x20)
  header.write('\x93NUMPY', 0, 'latin1')
  header[6] = 1
  header[7] = 0
  header.writeUInt16LE(total - 10, 8)
  header.write(dict, 10, 'latin1')
  header[total - 1] = 0x0a
  return header
}
