/**
 * Packs an identity-folder dataset into the notebook's own layout, decoded once:
 *
 *   OUT/images.npy   N×S×S×3 uint8 (numpy `np.load` reads it; so does {@link NpyDataset})
 *   OUT/names.npy    N numpy unicode strings, the identity of each row
 *   OUT/index.json   what was packed: size, centre crop, source, identities, skipped files
 *
 * Images are decoded and resized in parallel by the loader (sharp), exactly as training
 * decodes them without augmentation. Rows are appended as batches finish and the progress
 * is recorded in `OUT/pack.json`, so an interrupted pack resumes where it stopped.
 *
 * Two rules keep what is already there safe:
 * - A file that may be in use is never changed in place. Rows go to
 *   `OUT/images.npy.partial`, which is renamed to `images.npy` only when the pack is
 *   complete (names.npy and index.json likewise through a temporary name). A trainer that
 *   has the old images.npy open keeps reading the rows it opened.
 * - Files that are not a pack's own are never overwritten: an OUT that holds images.npy,
 *   names.npy or index.json without this pack's `pack.json` is refused.
 */
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { DataError, InvalidArgumentError, OutputError } from '../errors'
import { ImageFolder } from './image-folder'
import { ImageList } from './image-list'
import { npyHeader } from './npy'
import { BatchLoader } from './loader'
import { checkCenterCrop } from './preprocess'
import { SequentialSampler } from './sampler'
import type { SkippedImage } from './source'

export interface PackOptions {
  /** Side of the square rows in pixels. Required. */
  size: number
  /** Central fraction of each image kept before resizing. Default `1`. */
  centerCrop?: number
  /** Images decoded per batch (and per progress record). Default `256`. */
  batchSize?: number
  /** Called after each batch with the images done so far (skipped ones included). */
  onProgress?: (done: number, total: number) => void
  /** Called for each image that cannot be decoded (it is left out). Default: a process warning. */
  onWarning?: (error: DataError) => void
  /** Stops after the batch in flight; a later call with the same arguments resumes. */
  signal?: AbortSignal
}

export interface PackResult {
  images: string
  names: string
  index: string
  /** Rows written. */
  count: number
  /** Images of the folder that could not be decoded, left out. */
  skipped: readonly SkippedImage[]
  /** Images that an earlier, interrupted call had already packed. */
  resumed: number
  /** `false` when `signal` stopped it first. */
  complete: boolean
}

/** The npy header is padded to this many bytes, so that it can be rewritten in place. */
const HEADER_BYTES = 128

/** A fixed-size header for the rows file: its length never changes with N. */
function imagesHeader(rows: number, size: number): Buffer {
  const header = npyHeader('|u1', [rows, size, size, 3])
  if (header.length > HEADER_BYTES) throw new InvalidArgumentError(`${rows} rows of ${size}×${size} do not fit a ${HEADER_BYTES}-byte npy header`)
  const padded = Buffer.alloc(HEADER_BYTES, 0x20)
  header.copy(padded, 0, 0, header.length - 1)
  padded.writeUInt16LE(HEADER_BYTES - 10, 8)
  padded[HEADER_BYTES - 1] = 0x0a
  return padded
}

/** numpy `<U{n}` strings: UTF-32LE code points, zero-padded. */
export function namesNpy(names: readonly string[]): Buffer {
  const points = names.map((name) => Array.from(name, (c) => c.codePointAt(0)!))
  const width = Math.max(1, ...points.map((p) => p.length))
  const header = npyHeader(`<U${width}`, [names.length])
  const body = Buffer.alloc(names.length * width * 4)
  points.forEach((p, row) => p.forEach((code, i) => body.writeUInt32LE(code, (row * width + i) * 4)))
  return Buffer.concat([header, body])
}

interface Progress {
  format: 'facenet-pack-progress'
  source: string
  size: number
  centerCrop: number
  total: number
  /** Images of the folder handled, in its order (rows written plus images skipped). */
  done: number
  rows: number
  skipped: SkippedImage[]
}

/**
 * Runs one write of `file`, turning a system error into an `OutputError` that names the
 * file: a write to a descriptor (ENOSPC on a full disk, EDQUOT, EIO) carries no path.
 */
function onDisk<T>(file: string, write: () => T): T {
  try {
    return write()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === undefined) throw error
    const hint = code === 'ENOSPC' || code === 'EDQUOT' ? ': the disk is full; free space and run the same command again to continue' : ''
    throw new OutputError(file, `could not be written (${code})${hint}`, { cause: error })
  }
}

function writeAtomic(file: string, data: string | Uint8Array): void {
  onDisk(file, () => {
    writeFileSync(`${file}.tmp`, data)
    renameSync(`${file}.tmp`, file)
  })
}

/** The files a pack leaves in OUT, which an OUT without our pack.json must not already hold. */
const OUTPUT_NAMES = ['images.npy', 'names.npy', 'index.json'] as const

/**
 * Packs `dir` (one sub-folder per identity, as {@link ImageFolder} reads it) into `out`.
 * Rerunning it after an interruption continues; rerunning it on a finished pack with the
 * same options does nothing. Different options or another source refuse to mix.
 */
export async function packImageFolder(dir: string, out: string, options: PackOptions): Promise<PackResult> {
  const size = options?.size
  if (!Number.isInteger(size) || size < 8 || size > 4096) throw new InvalidArgumentError(`size must be an integer from 8 to 4096, got ${String(size)}`)
  const centerCrop = checkCenterCrop(options.centerCrop)
  const batchSize = options.batchSize ?? 256
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new InvalidArgumentError(`batchSize must be an integer ≥ 1, got ${String(batchSize)}`)
  const source = resolve(dir)
  const folder = await ImageFolder.open(source)
  const total = folder.items.length
  await mkdir(out, { recursive: true })
  const files = { images: join(out, 'images.npy'), names: join(out, 'names.npy'), index: join(out, 'index.json'), progress: join(out, 'pack.json') }
  const partial = `${files.images}.partial`

  let progress: Progress = { format: 'facenet-pack-progress', source, size, centerCrop, total, done: 0, rows: 0, skipped: [] }
  if (existsSync(files.progress)) {
    let previous: Progress
    try {
      previous = JSON.parse(readFileSync(files.progress, 'utf8')) as Progress
    } catch (error) {
      throw new DataError(files.progress, `is not a pack progress file (${(error as Error).message}); remove ${out} to start over`)
    }
    const same = previous.format === progress.format && previous.source === source && previous.size === size && previous.centerCrop === centerCrop && previous.total === total
    if (!same) {
      throw new InvalidArgumentError(
        `${out} holds a pack of ${previous.source} at size ${previous.size}, centre crop ${previous.centerCrop}, ${previous.total} images; ` +
          `this call packs ${source} at size ${size}, centre crop ${centerCrop}, ${total} images. Use another folder or remove it`,
      )
    }
    progress = previous
    // Finished already: nothing is read or written, so a run training on it is undisturbed.
    if (progress.done === total && existsSync(files.images) && existsSync(files.names) && existsSync(files.index)) {
      return { images: files.images, names: files.names, index: files.index, count: progress.rows, skipped: progress.skipped, resumed: progress.done, complete: true }
    }
    // The rows of an interrupted pack live in the partial file; without it, start over.
    if (!existsSync(partial)) progress = { ...progress, done: 0, rows: 0, skipped: [] }
  } else {
    const foreign = OUTPUT_NAMES.map((name) => join(out, name)).find((file) => existsSync(file))
    if (foreign) throw new OutputError(foreign, `exists and was not written by a pack into ${out} (no pack.json beside it); pack into another folder, or move it away`)
  }
  const resumed = progress.done
  const rowBytes = size * size * 3
  const fd = onDisk(partial, () => openSync(partial, existsSync(partial) ? 'r+' : 'w+'))
  const skipped = [...progress.skipped]
  try {
    // Whatever an interrupted run appended after its last recorded batch is dropped.
    onDisk(partial, () => {
      ftruncateSync(fd, HEADER_BYTES + progress.rows * rowBytes)
      writeSync(fd, imagesHeader(progress.rows, size), 0, HEADER_BYTES, 0)
    })
    const rest = folder.items.slice(progress.done)
    const list = new ImageList(
      rest.map((item) => item.path),
      rest.map((item) => item.identity),
    )
    const loader = new BatchLoader(list, {
      size: { height: size, width: size },
      sampler: new SequentialSampler(list, batchSize),
      centerCrop,
      onBadImage: 'skip',
      onWarning: (error) => {
        skipped.push({ file: error.file, reason: error.message })
        ;(options.onWarning ?? ((e: DataError) => process.emitWarning(e.message, 'FaceNetDataWarning')))(error)
      },
      ...(options.signal ? { signal: options.signal } : {}),
    })
    let position = HEADER_BYTES + progress.rows * rowBytes
    try {
      for await (const batch of loader) {
        onDisk(partial, () => writeSync(fd, batch.pixels, 0, batch.pixels.length, position))
        position += batch.pixels.length
        // Items up to the end of this sampler batch are done, decoded or skipped.
        const handled = Math.min(rest.length, (batch.batch + 1) * batchSize)
        progress = { ...progress, done: resumed + handled, rows: progress.rows + batch.indices.length, skipped: [...skipped] }
        writeAtomic(files.progress, JSON.stringify(progress) + '\n')
        options.onProgress?.(progress.done, total)
        if (options.signal?.aborted) break
      }
    } catch (error) {
      if (!options.signal?.aborted) throw error
    }
    onDisk(partial, () => writeSync(fd, imagesHeader(progress.rows, size), 0, HEADER_BYTES, 0))
  } finally {
    closeSync(fd)
  }
  const complete = progress.done === total
  if (complete) {
    const skippedFiles = new Set(skipped.map((s) => s.file))
    const names = folder.items.filter((item) => !skippedFiles.has(item.path)).map((item) => item.identity)
    if (names.length !== progress.rows) throw new DataError(files.images, `holds ${progress.rows} rows but ${names.length} images were packed; remove ${out} and pack again`)
    // names.npy and index.json first: an images.npy always comes with the names of its rows.
    writeAtomic(files.names, namesNpy(names))
    writeAtomic(
      files.index,
      JSON.stringify(
        { format: 'facenet-pack', version: 1, source, size, centerCrop, count: progress.rows, identities: new Set(names).size, images: 'images.npy', names: 'names.npy', skipped },
        null,
        2,
      ) + '\n',
    )
    renameSync(partial, files.images)
  }
  return { images: files.images, names: files.names, index: files.index, count: progress.rows, skipped, resumed, complete }
}
