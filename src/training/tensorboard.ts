/**
 * TensorBoard logging: event files as `torch.utils.tensorboard.SummaryWriter` writes them
 * (scalars, histograms, images, text), and the embedding projector's files.
 *
 * An event file is a sequence of TFRecords, each one serialized `Event` protobuf:
 *   uint64 length (LE) · uint32 masked crc32c(length bytes) · data · uint32 masked crc32c(data)
 * The messages are encoded by protobufjs from {@link TENSORBOARD_PROTO}, the checksums come
 * from @node-rs/crc32's crc32c; the framing around them is the few lines of {@link record}.
 */
import { crc32c } from '@node-rs/crc32'
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { parse, type Type } from 'protobufjs'
import sharp from 'sharp'
import { OutputError } from '../errors'
import { TENSORBOARD_PROTO } from './tensorboard-proto'

const { root } = parse(TENSORBOARD_PROTO, { keepCase: true })
const EventType: Type = root.lookupType('tensorboard.Event')

/** TensorFlow's `DT_STRING`, the dtype of a text summary's tensor. */
const DT_STRING = 7
/** `SessionLog.START`: TensorBoard drops the events of earlier files at or after its step. */
const SESSION_START = 1
/** Buckets of a histogram: equal widths between the values' min and max, as numpy's default. */
const HISTOGRAM_BUCKETS = 30
/** Event files opened by this process, the last part of their names (as PyTorch's). */
let filesOpened = 0

/** TFRecord's masked checksum: rotated and offset, so a CRC of data holding CRCs stays strong. */
function maskedCrc32c(data: Uint8Array): number {
  const crc = crc32c(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0
}

/** One TFRecord around `data`. */
function record(data: Uint8Array): Buffer {
  const header = Buffer.alloc(12)
  header.writeBigUInt64LE(BigInt(data.length), 0)
  header.writeUInt32LE(maskedCrc32c(header.subarray(0, 8)), 8)
  const footer = Buffer.alloc(4)
  footer.writeUInt32LE(maskedCrc32c(data), 0)
  return Buffer.concat([header, data, footer])
}

/** HistogramProto's fields for `values`: bucket `i` counts the values in (limit[i-1], limit[i]]. */
export function histogram(values: ArrayLike<number>): { min: number; max: number; num: number; sum: number; sum_squares: number; bucket_limit: number[]; bucket: number[] } {
  let min = Infinity
  let max = -Infinity
  let sum = 0
  let sumSquares = 0
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!
    min = Math.min(min, v)
    max = Math.max(max, v)
    sum += v
    sumSquares += v * v
  }
  const width = max > min ? (max - min) / HISTOGRAM_BUCKETS : 0
  const buckets = width > 0 ? HISTOGRAM_BUCKETS : 1
  const bucket = new Array<number>(buckets).fill(0)
  for (let i = 0; i < values.length; i++) {
    bucket[width > 0 ? Math.min(buckets - 1, Math.max(0, Math.ceil((values[i]! - min) / width) - 1)) : 0]!++
  }
  const bucket_limit = Array.from({ length: buckets }, (_, i) => (i === buckets - 1 ? max : min + (i + 1) * width))
  return { min, max, num: values.length, sum, sum_squares: sumSquares, bucket_limit, bucket }
}

/**
 * An open event file in `dir`, named as TensorFlow and PyTorch name theirs
 * (`events.out.tfevents.<unix seconds>.<host>.<pid>.<n>`: the pid and a per-process count
 * keep runs started in the same second apart). Each event is on disk when its call returns. Like the JSONL log, the file is
 * a record, not the run: a failed write (a full disk) is reported once through `warn`, and
 * training goes on without it.
 */
export class EventWriter {
  readonly file: string
  #fd: number | undefined
  #failed = false
  readonly #warn: (message: string) => void

  private constructor(file: string, fd: number, warn: (message: string) => void) {
    this.file = file
    this.#fd = fd
    this.#warn = warn
  }

  /**
   * Creates `dir` and a new event file in it. `startStep` is the first step this run will log:
   * TensorBoard then hides what older files in `dir` logged from that step on, the steps a
   * run resumed from a checkpoint trains again.
   */
  static async open(dir: string, startStep: number, warn: (message: string) => void): Promise<EventWriter> {
    const file = join(resolve(dir), `events.out.tfevents.${Math.floor(Date.now() / 1000)}.${hostname()}.${process.pid}.${filesOpened++}`)
    let fd: number
    try {
      await mkdir(resolve(dir), { recursive: true })
      fd = openSync(file, 'wx')
    } catch (cause) {
      throw new OutputError(file, `cannot be created for TensorBoard (${problem(cause)})`, { cause })
    }
    const writer = new EventWriter(file, fd, warn)
    writer.#event({ file_version: 'brain.Event:2' }, 0)
    writer.#event({ session_log: { status: SESSION_START } }, startStep)
    return writer
  }

  #event(what: Record<string, unknown>, step: number): void {
    if (this.#failed || this.#fd === undefined) return
    const message = EventType.fromObject({ wall_time: Date.now() / 1000, step, ...what })
    try {
      writeSync(this.#fd, record(EventType.encode(message).finish()))
    } catch (cause) {
      this.#failed = true
      this.#warn(`${this.file}: the TensorBoard log cannot be written (${problem(cause)}); training goes on without it`)
    }
  }

  #summary(step: number, values: Record<string, unknown>[]): void {
    if (values.length > 0) this.#event({ summary: { value: values } }, step)
  }

  /**
   * Scalars that share a step, in one event. NaN is written as it is (TensorBoard marks it on
   * the chart), as `SummaryWriter.add_scalar` does: e.g. a VAL that no threshold reaches.
   */
  scalars(step: number, values: Record<string, number>): void {
    this.#summary(step, Object.entries(values).map(([tag, simple_value]) => ({ tag, simple_value })))
  }

  /** Histograms of non-empty value lists; an empty list is left out. */
  histograms(step: number, values: Record<string, ArrayLike<number>>): void {
    const present = Object.entries(values).filter(([, v]) => v.length > 0)
    this.#summary(step, present.map(([tag, v]) => ({ tag, histo: histogram(v) })))
  }

  /** An encoded PNG of `width`×`height` RGB(A) pixels. */
  image(step: number, tag: string, png: Uint8Array, width: number, height: number, channels: 3 | 4 = 4): void {
    this.#summary(step, [{ tag, image: { width, height, colorspace: channels, encoded_image_string: png } }])
  }

  /** Markdown for TensorBoard's Text tab. */
  text(step: number, tag: string, markdown: string): void {
    this.#summary(step, [
      {
        tag,
        metadata: { plugin_data: { plugin_name: 'text', content: new Uint8Array(0) } },
        tensor: { dtype: DT_STRING, tensor_shape: { dim: [{ size: 1 }] }, string_val: [Buffer.from(markdown, 'utf8')] },
      },
    ])
  }

  close(): void {
    if (this.#fd === undefined) return
    closeSync(this.#fd)
    this.#fd = undefined
  }
}

function problem(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? (error as Error).message
}

/** Images drawn for the projector at most: its sprite (a grid of thumbnails) stays a few MB. */
export const PROJECTOR_SAMPLE = 500
/** Longest side of a sprite thumbnail in pixels. */
const THUMBNAIL = 48

/** At most `limit` indices in 0..n, evenly spaced, so a sample spans the whole set in order. */
export function evenSample(n: number, limit = PROJECTOR_SAMPLE): number[] {
  if (n <= limit) return Array.from({ length: n }, (_, i) => i)
  return Array.from({ length: limit }, (_, i) => Math.floor((i * n) / limit))
}

export interface ProjectorSample {
  /** Row-major embeddings of the sampled images, `dim` values each. */
  embeddings: Float32Array
  dim: number
  /** One label per sampled image (its identity, or its index in the validation images). */
  labels: string[]
  /** The sampled images, N×H×W×3 uint8. */
  images: { data: Uint8Array; shape: [number, number, number, 3] }
  /**
   * Shown in the projector's list of tensors. Keep it the same from one export to the next: a
   * running TensorBoard caches the config it read first and asks for the tensor by this name.
   */
  name: string
}

/** Writes `file` under a temporary name and renames it, so a reader never sees half a file. */
async function writeWhole(file: string, data: string | Uint8Array): Promise<void> {
  const temp = `${file}.${process.pid}.tmp`
  try {
    await writeFile(temp, data)
    await rename(temp, file)
  } catch (cause) {
    await rm(temp, { force: true })
    throw new OutputError(file, `cannot be written for TensorBoard's projector (${problem(cause)})`, { cause })
  }
}

/** A tab or a newline inside a label would shift the metadata's columns or rows. */
function tsvCell(label: string): string {
  return label.replace(/[\t\r\n]+/g, ' ')
}

/**
 * The embedding projector's files in `dir`: `projector_config.pbtxt` pointing at
 * `projector/tensors.tsv`, `projector/metadata.tsv` (one label per row) and
 * `projector/sprite.png` (the images as a grid of thumbnails, row-major). Each export
 * replaces the last one: the projector shows the newest validation.
 */
export async function writeProjector(dir: string, sample: ProjectorSample): Promise<void> {
  const root = resolve(dir)
  const sub = join(root, 'projector')
  await mkdir(sub, { recursive: true }).catch((cause: unknown) => {
    throw new OutputError(sub, `cannot be created for TensorBoard's projector (${problem(cause)})`, { cause })
  })
  const n = sample.labels.length
  const rows: string[] = []
  for (let i = 0; i < n; i++) {
    rows.push(Array.from(sample.embeddings.subarray(i * sample.dim, (i + 1) * sample.dim), (v) => String(v)).join('\t'))
  }
  const [, height, width] = sample.images.shape
  const scale = THUMBNAIL / Math.max(height, width)
  const thumbWidth = Math.max(1, Math.round(width * scale))
  const thumbHeight = Math.max(1, Math.round(height * scale))
  const sprite = await spriteOf(sample.images, thumbWidth, thumbHeight)
  await writeWhole(join(sub, 'tensors.tsv'), rows.join('\n') + '\n')
  await writeWhole(join(sub, 'metadata.tsv'), sample.labels.map(tsvCell).join('\n') + '\n')
  await writeWhole(join(sub, 'sprite.png'), sprite)
  const config = [
    'embeddings {',
    `  tensor_name: ${JSON.stringify(sample.name)}`,
    '  tensor_path: "projector/tensors.tsv"',
    '  metadata_path: "projector/metadata.tsv"',
    '  sprite {',
    '    image_path: "projector/sprite.png"',
    `    single_image_dim: ${thumbWidth}`,
    `    single_image_dim: ${thumbHeight}`,
    '  }',
    '}',
    '',
  ].join('\n')
  await writeWhole(join(root, 'projector_config.pbtxt'), config)
}

/** A square-ish grid of thumbnails, row-major and left-aligned as the projector reads it. */
async function spriteOf(images: ProjectorSample['images'], thumbWidth: number, thumbHeight: number): Promise<Buffer> {
  const [n, height, width] = images.shape
  const per = height * width * 3
  const thumbs = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      sharp(images.data.subarray(i * per, (i + 1) * per), { raw: { width, height, channels: 3 } })
        .resize(thumbWidth, thumbHeight, { fit: 'fill' })
        .raw()
        .toBuffer(),
    ),
  )
  const columns = Math.max(1, Math.ceil(Math.sqrt(n)))
  const gridRows = Math.max(1, Math.ceil(n / columns))
  const gridWidth = columns * thumbWidth
  const grid = Buffer.alloc(gridRows * thumbHeight * gridWidth * 3, 255)
  const rowBytes = thumbWidth * 3
  thumbs.forEach((thumb, i) => {
    const x = (i % columns) * thumbWidth
    const y = Math.floor(i / columns) * thumbHeight
    for (let r = 0; r < thumbHeight; r++) thumb.copy(grid, ((y + r) * gridWidth + x) * 3, r * rowBytes, (r + 1) * rowBytes)
  })
  return sharp(grid, { raw: { width: gridWidth, height: gridRows * thumbHeight, channels: 3 } }).png().toBuffer()
}
