import { readdir, stat } from 'node:fs/promises'
import { extname, join, resolve } from 'node:path'
import { DataError } from '../errors'

/**
 * What the photo decoder (sharp) reads: `detect`, `align`, `embed` and the rest list the
 * same files, so a GIF or TIFF that `detect` reads is not silently left out by `align`.
 */
export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff'])

/**
 * Image files under `dir`, recursively, in code-point order. Other files are passed to
 * `onOther` (when given), so a command can count and list what it did not read.
 */
export async function listImages(dir: string, onOther?: (path: string) => void): Promise<string[]> {
  const root = resolve(dir)
  let info
  try {
    info = await stat(root)
  } catch {
    throw new DataError(root, 'does not exist')
  }
  if (!info.isDirectory()) throw new DataError(root, 'is not a directory')
  const out: string[] = []
  const walk = async (at: string): Promise<void> => {
    let listed
    try {
      listed = await readdir(at, { withFileTypes: true })
    } catch (cause) {
      throw new DataError(at, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
    }
    const entries = listed.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    for (const entry of entries) {
      const path = join(at, entry.name)
      if (entry.isDirectory()) await walk(path)
      else if (IMAGE_EXTENSIONS.has(extname(entry.name).toLowerCase())) out.push(path)
      else onOther?.(path)
    }
  }
  await walk(root)
  return out
}
