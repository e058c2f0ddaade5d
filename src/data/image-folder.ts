import { readdir, stat } from 'node:fs/promises'
import { basename, extname, join, resolve } from 'node:path'
import { DataError, InvalidArgumentError, quoted } from '../errors'
import type { CropResult, FolderAlignOptions } from './align-cache'
import { decodeCheck } from './preprocess'
import { badData, countLabels, defaultWarn, type ImageInput, type ImageSource, type OnBadImage, type SkippedImage } from './source'
import { notRegularProblem } from '../regular-file'
import { TRAINING } from '../tables/training'

export interface ImageFolderItem {
  /** Absolute path of the image file. */
  path: string
  /** With `align`: the cached aligned crop the loader reads instead of `path`. */
  crop?: string
  /** Index into {@link ImageFolder.identities}. */
  label: number
  identity: string
}

export interface ImageFolderOptions {
  /** Identities with fewer images are left out. Default `1`. */
  minImagesPerIdentity?: number
  /** File extensions read as images, case-insensitive. Default `['.jpg', '.jpeg', '.png', '.webp']`. */
  extensions?: readonly string[]
  /**
   * `'error'` (default): a bad image or an identity folder without images throws a
   * {@link DataError} naming it. `'skip'`: it is left out, reported through `onWarning`
   * and listed in {@link ImageFolder.skipped}.
   */
  onBadImage?: OnBadImage
  /**
   * Also decode every image once while opening, to find corrupt or truncated files
   * before training starts. Default `false`: zero-byte and unreadable files are still
   * found while opening; corrupt ones when the loader reaches them.
   */
  verify?: boolean
  /** Receives skip warnings. Default: `process.emitWarning`. */
  onWarning?: (error: DataError) => void
  /**
   * The images are raw photos: detect each one's largest face and train on its aligned
   * crop (see {@link FolderAlignOptions}; `true` takes the defaults: template mode, 160
   * pixels). Crops are computed once, while opening, and cached on disk keyed by file and
   * options; later opens read the cache. Photos without a face are left out, listed in
   * {@link ImageFolder.skipped} and reported through `onWarning`, never thrown. Default
   * `false`.
   */
  align?: boolean | FolderAlignOptions
  /** With `align`: told how many uncached photos have been aligned so far. */
  onAlignProgress?: (done: number, total: number) => void
}

const DEFAULT_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.webp']

// Code-point order, not locale order: the same labels on every machine.
const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/**
 * A face dataset in the LFW layout: one folder per identity (`root/Name/*.jpg`), holding
 * JPEG, PNG or WebP images. Files directly under the root (such as `pairs.txt`) are
 * ignored. Identities and images are sorted by code point, so labels are deterministic.
 */
export class ImageFolder implements ImageSource {
  readonly root: string
  readonly identities: readonly string[]
  readonly items: readonly ImageFolderItem[]
  readonly labels: Int32Array
  /** Images per identity, indexed by label. */
  readonly counts: Int32Array
  /** Images and identity folders left out with `onBadImage: 'skip'`. */
  readonly skipped: readonly SkippedImage[]

  private constructor(root: string, identities: string[], items: ImageFolderItem[], skipped: SkippedImage[]) {
    this.root = root
    this.identities = identities
    this.items = items
    this.labels = Int32Array.from(items, (item) => item.label)
    this.counts = countLabels(this.labels, identities.length)
    this.skipped = skipped
  }

  get length(): number {
    return this.items.length
  }

  input(index: number): ImageInput {
    const item = this.items[index]
    if (!item) throw new InvalidArgumentError(`item index ${index} is out of range 0..${this.items.length - 1}`)
    return { kind: 'file', path: item.crop ?? item.path }
  }

  /** Opens `dir`, lists identities and images, and checks every file can be read. */
  static async open(dir: string, options: ImageFolderOptions = {}): Promise<ImageFolder> {
    const minImages = options.minImagesPerIdentity ?? 1
    if (!Number.isInteger(minImages) || minImages < 1) {
      throw new InvalidArgumentError(`minImagesPerIdentity must be an integer ≥ 1, got ${String(minImages)}`)
    }
    const onBad = options.onBadImage ?? TRAINING.onBadImage.default
    if (onBad !== 'error' && onBad !== 'skip') {
      throw new InvalidArgumentError(`onBadImage must be 'error' or 'skip', got ${String(onBad)}`)
    }
    const warn = options.onWarning ?? defaultWarn
    const extensions = new Set((options.extensions ?? DEFAULT_EXTENSIONS).map((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase()))
    const root = resolve(dir)
    let entries
    try {
      entries = await readdir(root, { withFileTypes: true })
    } catch (cause) {
      throw new DataError(root, `cannot read the dataset folder (${(cause as Error).message})`, { cause })
    }
    const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(byCodePoint)
    if (names.length === 0) throw new DataError(root, 'has no identity folders (expected root/Name/image.jpg)')

    const skipped: SkippedImage[] = []
    const perIdentity = await mapLimit(names, 16, async (name) => {
      const folder = join(root, name)
      let listed: string[]
      try {
        listed = await readdir(folder)
      } catch (cause) {
        // An unreadable (EACCES) or vanished folder, or one whose non-UTF-8 name Node
        // cannot give back as a string path: a bad identity, not an uncoded crash.
        return { name, folder, checked: [], problem: `cannot read the identity folder (${readProblem(cause, name)})` }
      }
      const files = listed.filter((f) => extensions.has(extname(f).toLowerCase())).sort(byCodePoint)
      const checked = await mapLimit(files, 16, async (file) => {
        const path = join(folder, file)
        return { path, problem: await checkFile(path, options.verify ?? false) }
      })
      return { name, folder, checked, problem: undefined }
    })

    const crops = options.align ? await cropsOf(perIdentity, options.align === true ? {} : options.align, onBad, options.onAlignProgress) : undefined
    const identities: string[] = []
    const items: ImageFolderItem[] = []
    for (const { name, folder, checked, problem } of perIdentity) {
      if (problem) {
        badData(new DataError(folder, problem), onBad, skipped, warn)
        continue
      }
      const good: string[] = []
      for (const { path, problem } of checked) {
        const cropped = problem ? undefined : crops?.get(path)
        if (problem) badData(new DataError(path, problem), onBad, skipped, warn)
        else if (cropped && 'noFace' in cropped) {
          // No face is not bad data: the photo is left out whatever onBadImage says.
          const error = new DataError(path, 'no face found; left out of the aligned dataset')
          skipped.push({ file: path, reason: error.message })
          warn(error)
        } else if (cropped && 'bad' in cropped) badData(new DataError(path, cropped.bad), onBad, skipped, warn)
        else good.push(path)
      }
      if (good.length === 0) {
        const why = checked.length === 0 ? `has no images (${[...extensions].join(', ')})` : 'has no readable images'
        badData(new DataError(folder, `identity folder ${why}`), onBad, skipped, warn)
        continue
      }
      if (good.length < minImages) continue
      const label = identities.length
      identities.push(name)
      for (const path of good) {
        const cropped = crops?.get(path)
        items.push(cropped && 'crop' in cropped ? { path, crop: cropped.crop, label, identity: name } : { path, label, identity: name })
      }
    }
    if (identities.length === 0) {
      throw new DataError(root, `no identity has at least ${minImages} readable image(s)`)
    }
    return new ImageFolder(root, identities, items, skipped)
  }

  /**
   * The same folder restricted to `identities` (e.g. the training identities of the LFW
   * unrestricted protocol), relabelled 0..n−1 in sorted order. Unknown names throw.
   */
  subset(identities: Iterable<string>): ImageFolder {
    const wanted = new Set(identities)
    const known = new Set(this.identities)
    for (const name of wanted) {
      if (!known.has(name)) throw new InvalidArgumentError(`identity ${quoted(name)} is not in ${this.root}`)
    }
    const kept = this.identities.filter((name) => wanted.has(name))
    const relabel = new Map(kept.map((name, i) => [name, i]))
    const items = this.items
      .filter((item) => relabel.has(item.identity))
      .map((item) => ({ ...item, label: relabel.get(item.identity)! }))
    return new ImageFolder(this.root, kept, items, [...this.skipped])
  }
}

/** Aligned crops of every readable photo of the folder, by path. */
async function cropsOf(
  perIdentity: readonly { checked: readonly { path: string; problem: string | undefined }[] }[],
  options: FolderAlignOptions,
  onBad: OnBadImage,
  onProgress?: (done: number, total: number) => void,
): Promise<Map<string, CropResult>> {
  const paths = perIdentity.flatMap((entry) => entry.checked.filter((c) => !c.problem).map((c) => c.path))
  // Loaded only when aligning: it brings in the detector and so the native addon, which
  // listing a folder of crops must not need.
  const { alignedCrops } = await import('./align-cache')
  const results = await alignedCrops(paths, options, onBad, onProgress)
  return new Map(paths.map((path, i) => [path, results[i]!]))
}

async function checkFile(path: string, verify: boolean): Promise<string | undefined> {
  let size: number
  try {
    const info = await stat(path)
    const special = notRegularProblem(info)
    if (special) return special
    size = info.size
  } catch (error) {
    return `cannot be read (${readProblem(error, basename(path))})`
  }
  if (size === 0) return 'is empty (0 bytes)'
  if (verify) return decodeCheck(path)
  return undefined
}

/** The error code, and a hint when the name itself is the problem (not valid UTF-8). */
function readProblem(error: unknown, name: string): string {
  const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message
  // Node decodes directory entries as UTF-8, turning invalid bytes into U+FFFD, so such a
  // name no longer addresses the file.
  return name.includes('\uFFFD') ? `${code}; its name is not valid UTF-8` : code
}
