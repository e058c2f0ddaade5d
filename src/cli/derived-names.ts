/**
 * The one rule for naming files derived from input files (`align`'s crops, the PNGs of
 * `detect --draw DIR` and `identify --draw DIR`), and for where they may go. The README's
 * "Output names" section states it for users.
 *
 * 1. An output is named after its input's path relative to the input folder (for
 *    `--draw`, the file name alone), without the extension: `Ada/1.jpg` → `Ada/1`.
 * 2. Inputs that share that stem (`x.jpg`, `x.png`, `x.webp`) all keep their extension
 *    instead: `x.jpg`, `x.png`, `x.webp` → `x.jpg`, `x.png`, `x.webp` (then `.jpg` is
 *    appended: `x.png.jpg`).
 * 3. Face k ≥ 1 of an input named B (`--faces all`) is `B_k`, unless that is the name of
 *    another input's output, in which case it is `B_k~1` (or `~2`, …): the photo named
 *    `g_1.jpg` keeps `g_1.jpg`, the second face of `g.jpg` becomes `g_1~1.jpg`.
 * 4. Any name still shared after that gets `~1`, `~2`, … in the inputs' sorted order.
 *
 * Names depend only on the list of inputs, so a rerun (resume) finds the same names. No
 * output ever replaces an input: the output folder may not be an input folder, lie inside
 * one, or reach one through a symbolic link.
 */
import { realpathSync } from 'node:fs'
import { basename, dirname, extname, join, sep } from 'node:path'
import { UsageError } from './options'

/**
 * Output names (without the output's extension) for `inputs`, relative paths or file names,
 * by rules 1, 2 and 4: one per input, in the same order. Inputs may repeat (two photos of
 * one file name in different folders given to `--draw`): each still gets a name of its own.
 */
export function derivedNames(inputs: readonly string[]): string[] {
  const stem = (input: string) => input.slice(0, input.length - extname(input).length)
  const byStem = new Map<string, Set<string>>()
  for (const input of inputs) byStem.set(stem(input), (byStem.get(stem(input)) ?? new Set()).add(input))
  const wanted = inputs.map((input) => (byStem.get(stem(input))!.size > 1 ? input : stem(input)))
  const count = new Map<string, number>()
  for (const name of wanted) count.set(name, (count.get(name) ?? 0) + 1)
  // Sorted (stable for repeats), so that the ~N suffixes do not depend on the listing's order.
  const order = inputs.map((_, i) => i).sort((a, b) => (inputs[a]! < inputs[b]! ? -1 : inputs[a]! > inputs[b]! ? 1 : a - b))
  // Names that nobody shares are claimed first, so a suffix never displaces them.
  const taken = new Set(wanted.filter((name) => count.get(name) === 1))
  const names: string[] = new Array<string>(inputs.length)
  for (const i of order) {
    const name = count.get(wanted[i]!)! > 1 ? unclaimed(wanted[i]!, taken) : wanted[i]!
    taken.add(name)
    names[i] = name
  }
  return names
}

/** `name`, or the first of `name~1`, `name~2`, … not in `taken`. */
function unclaimed(name: string, taken: ReadonlySet<string>): string {
  if (!taken.has(name)) return name
  for (let n = 1; ; n++) if (!taken.has(`${name}~${n}`)) return `${name}~${n}`
}

/** The name of face `k` (0 = the input's own name) of the input named `base`, by rule 3. */
export function faceName(base: string, k: number, inputNames: ReadonlySet<string>): string {
  return k === 0 ? base : unclaimed(`${base}_${k}`, inputNames)
}

function real(path: string): string {
  try {
    return realpathSync(path)
  } catch {
    // Not there yet: judge by the nearest folder above it that exists.
    const parent = dirname(path)
    return parent === path ? path : join(real(parent), path.slice(parent.length + (parent.endsWith(sep) ? 0 : 1)))
  }
}

/**
 * Refuses (a usage error, exit 2, naming `outDir`) an output folder that is one of
 * `inputDirs` or, with `inside` (a tree of inputs, as `align` reads), lies inside one; a
 * symbolic link counts as where it leads. Derived files written there would mix with the
 * inputs, and could replace them.
 */
export function refuseOutputInInput(outDir: string, inputDirs: readonly string[], what: string, inside = true): void {
  const out = real(outDir)
  for (const dir of new Set(inputDirs.map(real))) {
    if (out === dir || (inside && out.startsWith(dir.endsWith(sep) ? dir : `${dir}${sep}`))) {
      const how = out === dir ? 'is the input folder' : 'is inside the input folder'
      const via = out !== outDir ? `, through a link (it resolves to ${out})` : ''
      throw new UsageError(`${outDir} ${how} ${dir}${via}; ${what} must go to a folder outside it`)
    }
  }
}

/** Where `--draw DIR` writes the PNG of each photo: DIR/NAME.png, NAME by the rule above. */
export function drawnPaths(drawDir: string, photos: readonly string[]): string[] {
  refuseOutputInInput(drawDir, photos.map((photo) => dirname(photo)), '--draw: the drawn photos', false)
  return derivedNames(photos.map((photo) => basename(photo))).map((name) => join(drawDir, `${name}.png`))
}
