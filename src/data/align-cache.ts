/**
 * Aligned crops of an image folder, computed once and kept on disk: each photo's crop is
 * a JPEG named by a hash of the file (path, size, mtime) and the align options, so a
 * second run — every epoch, every later training — reads crops instead of detecting again.
 */
import { createHash } from 'node:crypto'
import { mkdir, stat, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { alignBatches, alignKey, defaultDetector, resolveAlign, saveCrop, type AlignOptions } from '../align'
import { DataError } from '../errors'
import type { OnBadImage } from './source'

export interface FolderAlignOptions extends Omit<AlignOptions, 'detections' | 'faces' | 'onBadImage'> {
  /**
   * Where crops are cached. Default: `$FACENET_CACHE_DIR/aligned` when that variable is
   * set, else `~/.cache/facenet-torch/aligned`.
   */
  cacheDir?: string
  /** JPEG quality of the cached crops. Default `95`. */
  quality?: number
}

export function defaultCacheDir(): string {
  const base = process.env.FACENET_CACHE_DIR ?? join(homedir(), '.cache', 'facenet-torch')
  return join(base, 'aligned')
}

/** What became of one photo. */
export type CropResult = { crop: string } | { noFace: true } | { bad: string }

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  )
}

/**
 * The cached aligned crop (largest face) of each of `paths`, aligning the ones not cached
 * yet. A photo without a face gets a `.noface` marker, so it is not detected again.
 * `onCropped` is told how many photos were aligned so far (not counting cache hits).
 */
export async function alignedCrops(
  paths: readonly string[],
  options: FolderAlignOptions,
  onBad: OnBadImage,
  onCropped?: (done: number, total: number) => void,
): Promise<CropResult[]> {
  const resolved = resolveAlign(options, 'largest')
  const quality = options.quality ?? 95
  const dir = options.cacheDir ?? defaultCacheDir()
  const settings = alignKey(resolved)
  const keys = await Promise.all(
    paths.map(async (path) => {
      let info
      try {
        info = await stat(path)
      } catch (cause) {
        throw new DataError(path, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? String(cause)})`, { cause })
      }
      const hash = createHash('sha256').update(JSON.stringify({ path, size: info.size, mtime: info.mtimeMs, settings, quality })).digest('hex')
      return join(dir, hash.slice(0, 2), hash)
    }),
  )
  const results: (CropResult | undefined)[] = await Promise.all(
    keys.map(async (key) => ((await exists(`${key}.jpg`)) ? { crop: `${key}.jpg` } : (await exists(`${key}.noface`)) ? { noFace: true as const } : undefined)),
  )
  const todo = results.flatMap((r, i) => (r ? [] : [i]))
  let done = 0
  const rounds = alignBatches(
    todo.map((i) => paths[i]!),
    { ...options, faces: 'largest', onBadImage: onBad },
    defaultDetector(resolved),
    'largest',
  )
  for await (const round of rounds) {
    const c = round.crops
    const per = resolved.size * resolved.size * 3
    await Promise.all(
      Array.from({ length: c.shape[0] }, async (_, row) => {
        const i = todo[c.imageIndex[row]!]!
        await saveCrop(`${keys[i]}.jpg`, c.data.subarray(row * per, (row + 1) * per), resolved.size, quality)
        results[i] = { crop: `${keys[i]}.jpg` }
      }),
    )
    await Promise.all(
      c.noFace.map(async (j) => {
        const i = todo[j]!
        await mkdir(dirname(keys[i]!), { recursive: true })
        await writeFile(`${keys[i]}.noface`, '')
        results[i] = { noFace: true }
      }),
    )
    for (const b of c.bad) results[todo[b.index]!] = { bad: b.reason }
    done += round.count
    onCropped?.(done, todo.length)
  }
  return results.map((r) => r!)
}
