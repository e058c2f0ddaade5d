import { stat } from 'node:fs/promises'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { DataError, InvalidArgumentError, quoted } from '../errors'
import { badData, defaultWarn, type OnBadImage, type SkippedImage } from './source'
import { readRegularFile } from '../regular-file'
import { TRAINING } from '../tables/training'

export interface LfwPair {
  /** Absolute paths of the two images, inside the data root. */
  a: string
  b: string
  identityA: string
  identityB: string
  /** 1-based image numbers, as in the file. */
  indexA: number
  indexB: number
  /** True for a matched pair (same person). */
  same: boolean
}

export interface LfwFold {
  /** Matched pairs first, then mismatched, in file order. */
  pairs: LfwPair[]
  /** The identities of this fold's pairs, sorted. */
  identities: string[]
}

export interface LfwPairsOptions {
  /** Folder holding `Name/Name_NNNN.jpg`. Default: the pairs file's folder. */
  root?: string
  /** Image file extension. Default `'.jpg'`. */
  extension?: string
  /**
   * Check that every referenced image exists. Default `true`. A missing image throws a
   * {@link DataError} naming it, or with `onBadImage: 'skip'` drops its pairs with a warning.
   */
  checkImages?: boolean
  onBadImage?: OnBadImage
  onWarning?: (error: DataError) => void
}

// Identity names in LFW are letters, digits, '-', '_', '.', "'"; never path separators.
const SAFE_NAME = /^[^/\\\0]+$/

/**
 * The LFW pairs files: View 2 `pairs.txt` (header `10 300`: 10 folds of 300 matched and
 * 300 mismatched pairs) and View 1 `pairsDevTrain.txt` / `pairsDevTest.txt` (header `N`:
 * one fold of N matched and N mismatched pairs).
 */
export class LfwPairs {
  readonly file: string
  readonly root: string
  readonly folds: LfwFold[]
  /** Pairs dropped with `onBadImage: 'skip'` because an image is missing. */
  readonly skipped: SkippedImage[]

  private constructor(file: string, root: string, folds: LfwFold[], skipped: SkippedImage[]) {
    this.file = file
    this.root = root
    this.folds = folds
    this.skipped = skipped
  }

  static async parse(file: string, options: LfwPairsOptions = {}): Promise<LfwPairs> {
    const path = resolve(file)
    let text: string
    try {
      text = await readRegularFile(path, 'utf8')
    } catch (cause) {
      if (cause instanceof DataError) throw cause
      throw new DataError(path, `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
    }
    return LfwPairs.fromText(text, path, options)
  }

  /**
   * Parses the text of a pairs file. `file` names it in errors and, unless `options.root`
   * is given, its folder is the data root. {@link parse} reads the file and calls this.
   */
  static async fromText(text: string, file: string, options: LfwPairsOptions = {}): Promise<LfwPairs> {
    if (typeof text !== 'string') throw new InvalidArgumentError('text must be a string')
    const path = resolve(file)
    const root = resolve(options.root ?? dirname(path))
    const ext = options.extension ?? '.jpg'
    const lines = text.split(/\r?\n/)
    while (lines.length > 0 && lines[lines.length - 1]!.trim() === '') lines.pop()
    const fail = (line: number, what: string): never => {
      throw new DataError(path, `line ${line}: ${what}`)
    }
    const header = (lines[0] ?? '').trim().split(/\s+/)
    const int = (s: string | undefined, line: number, what: string): number => {
      if (s === undefined || !/^\d+$/.test(s) || Number(s) < 1) fail(line, `${what} must be a positive integer, got ${JSON.stringify(s ?? '')}`)
      return Number(s)
    }
    let folds: number
    let perFold: number
    if (header.length === 2) {
      folds = int(header[0], 1, 'the number of folds')
      perFold = int(header[1], 1, 'the number of pairs per fold')
    } else if (header.length === 1) {
      folds = 1
      perFold = int(header[0], 1, 'the number of pairs')
    } else {
      return fail(1, `header must be "folds pairs" (View 2) or "pairs" (View 1), got ${JSON.stringify(lines[0] ?? '')}`)
    }
    const expected = 1 + folds * perFold * 2
    if (lines.length !== expected) {
      fail(lines.length + 1, `expected ${expected - 1} pair lines for ${folds} fold(s) × ${perFold} matched + ${perFold} mismatched, found ${lines.length - 1}`)
    }
    const imagePath = (name: string, n: number, line: number): string => {
      if (!SAFE_NAME.test(name) || name === '.' || name === '..') fail(line, `invalid identity name ${quoted(name)}`)
      const p = resolve(root, name, `${name}_${String(n).padStart(4, '0')}${ext}`)
      const rel = relative(root, p)
      if (rel.startsWith('..') || isAbsolute(rel) || rel.split(sep).length !== 2) fail(line, `image path escapes the data root: ${p}`)
      return p
    }
    const out: LfwFold[] = []
    let lineNo = 1
    for (let f = 0; f < folds; f++) {
      const pairs: LfwPair[] = []
      for (let j = 0; j < 2 * perFold; j++) {
        lineNo++
        const t = lines[lineNo - 1]!.trim().split(/\s+/)
        const same = j < perFold
        if (same) {
          if (t.length !== 3) fail(lineNo, `a matched pair is "name i j", got ${JSON.stringify(lines[lineNo - 1])}`)
          const [name, i, k] = t as [string, string, string]
          const ia = int(i, lineNo, 'an image number')
          const ib = int(k, lineNo, 'an image number')
          pairs.push({ a: imagePath(name, ia, lineNo), b: imagePath(name, ib, lineNo), identityA: name, identityB: name, indexA: ia, indexB: ib, same })
        } else {
          if (t.length !== 4) fail(lineNo, `a mismatched pair is "name1 i name2 j", got ${JSON.stringify(lines[lineNo - 1])}`)
          const [n1, i, n2, k] = t as [string, string, string, string]
          const ia = int(i, lineNo, 'an image number')
          const ib = int(k, lineNo, 'an image number')
          pairs.push({ a: imagePath(n1, ia, lineNo), b: imagePath(n2, ib, lineNo), identityA: n1, identityB: n2, indexA: ia, indexB: ib, same })
        }
      }
      out.push({ pairs, identities: [] })
    }

    const skipped: SkippedImage[] = []
    if (options.checkImages ?? true) {
      const mode = options.onBadImage ?? TRAINING.onBadImage.default
      if (mode !== 'error' && mode !== 'skip') throw new InvalidArgumentError(`onBadImage must be 'error' or 'skip', got ${String(mode)}`)
      const unique = [...new Set(out.flatMap((fold) => fold.pairs.flatMap((p) => [p.a, p.b])))]
      const missing = new Set<string>()
      for (let i = 0; i < unique.length; i += 256) {
        await Promise.all(
          unique.slice(i, i + 256).map(async (p) => {
            const ok = await stat(p).then((s) => s.isFile() && s.size > 0, () => false)
            if (!ok) missing.add(p)
          }),
        )
      }
      // Report in file order, so the first error is the first missing image of the file.
      for (const p of unique) {
        if (missing.has(p)) {
          badData(new DataError(p, `image needed by ${path} is missing, empty or not a file`), mode, skipped, options.onWarning ?? defaultWarn)
        }
      }
      for (const fold of out) fold.pairs = fold.pairs.filter((p) => !missing.has(p.a) && !missing.has(p.b))
    }
    for (const fold of out) {
      fold.identities = [...new Set(fold.pairs.flatMap((p) => [p.identityA, p.identityB]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    }
    return new LfwPairs(path, root, out, skipped)
  }

  /** All pairs of all folds. */
  get pairs(): LfwPair[] {
    return this.folds.flatMap((f) => f.pairs)
  }

  /** The distinct image paths the pairs reference, sorted. */
  imagePaths(): string[] {
    return [...new Set(this.pairs.flatMap((p) => [p.a, p.b]))].sort()
  }

  /**
   * The LFW unrestricted protocol for test fold `k`: train on the identities of the
   * other folds (their union, sorted), test on fold `k`'s pairs.
   */
  unrestrictedSplit(k: number): { trainIdentities: string[]; test: LfwFold } {
    if (!Number.isInteger(k) || k < 0 || k >= this.folds.length) {
      throw new InvalidArgumentError(`fold must be an integer 0..${this.folds.length - 1}, got ${String(k)}`)
    }
    const train = new Set<string>()
    this.folds.forEach((fold, i) => {
      if (i !== k) for (const id of fold.identities) train.add(id)
    })
    // Official folds are disjoint; drop any overlap so no test identity is trained on.
    for (const id of this.folds[k]!.identities) train.delete(id)
    return { trainIdentities: [...train].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), test: this.folds[k]! }
  }
}
