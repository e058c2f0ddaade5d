/** `facenet align RAW_DIR OUT_DIR`: identity folders of photos in, aligned face crops out. */
import { mkdir, rename, stat, writeFile } from 'node:fs/promises'
import { join, relative, resolve } from 'node:path'
import { z } from 'zod'
import { ALIGN_MODES, type FaceSelection } from '../options'
import { ALIGN } from '../tables/align'
import { alignBatches, alignKey, defaultDetector, resolveAlign, saveCrop, type AlignOptions, type FaceGeometry } from '../align'
import { MAX_THREADS } from '../check'
import { OutputError } from '../errors'
import { derivedNames, faceName, refuseOutputInInput } from './derived-names'
import { listImages } from './model'
import { deviceSchema, EXIT, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, type CommandSpec, type FlagSpec } from './options'
import { flagsOf, schemaOf, setIn, type TableView } from './table-flags'
import { readRegularFile } from '../regular-file'
import { DataError } from '../errors'

/** The alignment flags `align` shares with `embed`, `compare`, `identify`, `cluster` and `eval`: `--align-size` and so on. */
const SHARED: TableView = { keys: ['size', 'mode', 'margin'], prefix: 'align', defaultFirst: "the model's stored alignment" }
export const ALIGN_FLAGS: Record<string, FlagSpec> = flagsOf(ALIGN, SHARED)

/** Unset flags stay unset: the library fills them in from the model, then its defaults. */
export const alignSchema = schemaOf(ALIGN, SHARED)

/** The library's align options from the shared flags: only those the user set. */
export function alignOptionsOf(o: { alignSize?: number; alignMode?: (typeof ALIGN_MODES)[number]; alignMargin?: number; device?: string; threads?: number }): AlignOptions {
  return {
    ...setIn(ALIGN, o, SHARED),
    ...(o.device && o.device !== 'auto' ? { device: o.device as AlignOptions['device'] } : {}),
    ...(o.threads ? { threads: o.threads } : {}),
  }
}

const ALIGN_COMMAND = ['size', 'mode', 'margin', 'faces', 'batchSize', 'onBadImage']

const schema = z.strictObject({
  ...schemaOf(ALIGN, ALIGN_COMMAND),
  device: deviceSchema.default('auto'),
  threads: positiveInt.max(MAX_THREADS).optional(),
  quality: z.number().int().min(1).max(100).default(95),
  detections: z.string().min(1).optional(),
}) as z.ZodObject<Record<string, z.ZodType>>

/** The options as `align` reads them (zod's inferred type is too wide for a generated shape). */
type AlignFlags = Pick<AlignOptions, 'size' | 'mode' | 'margin' | 'batchSize' | 'onBadImage'> & { faces: FaceSelection; device: string; threads?: number; quality: number; detections?: string }

export const alignSpec: CommandSpec<typeof schema> = {
  name: 'align',
  summary: SUMMARIES.align,
  usage: 'facenet align RAW_DIR OUT_DIR [--size 160] [--mode template|margin] [--faces largest|all]',
  positionals: { name: 'folders (RAW_DIR OUT_DIR)', min: 2, max: 2 },
  flags: {
    ...flagsOf(ALIGN, ALIGN_COMMAND.slice(0, 4)),
    device: { kind: 'string', value: 'DEV', help: "'auto' (default: the first CUDA GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'" },
    threads: { kind: 'number', value: 'N', help: 'libtorch threads (default: the CPU count)' },
    ...flagsOf(ALIGN, ['batchSize']),
    quality: { kind: 'number', value: 'Q', help: 'JPEG quality of the crops (default 95)' },
    ...flagsOf(ALIGN, ['onBadImage']),
    detections: { kind: 'string', value: 'FILE', help: 'JSON { "rel/path.jpg": [{ box, landmarks }] } of faces found elsewhere; other photos go to MTCNN' },
  },
  schema,
  notes: [
    'Every photo under RAW_DIR (searched recursively) becomes OUT_DIR/<same folders>/<name>.jpg.',
    'OUT_DIR/align-summary.json lists the photos with no face, with several faces, and skipped files.',
    'Run it again to resume: photos already written (or known to have no face) are skipped.',
  ],
}

const SUMMARY = 'align-summary.json'

interface Summary {
  options: string
  photos: number
  written: number
  noFace: string[]
  multipleFaces: { file: string; faces: number }[]
  bad: { file: string; reason: string }[]
  /** Files under RAW_DIR that are not images by their extension, so were not read. */
  notImages?: string[]
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile() && s.size > 0,
    () => false,
  )
}

async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`
  await writeFile(tmp, data)
  await rename(tmp, path)
}


export async function alignCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(alignSpec, argv)
  if (parsed.help) return printHelp(alignSpec)
  const o = parsed.options as unknown as AlignFlags
  const [rawDir, outDir] = parsed.positionals.map((p) => resolve(p)) as [string, string]
  refuseOutputInInput(outDir, [rawDir], 'the crops (and align-summary.json)')
  const options: AlignOptions = {
    ...setIn(ALIGN, o, ALIGN_COMMAND),
    device: o.device as AlignOptions['device'],
    ...(o.threads ? { threads: o.threads } : {}),
  }
  const resolved = resolveAlign(options, o.faces)
  const key = alignKey(resolved)
  const notImages: string[] = []
  const all = await listImages(rawDir, (path) => notImages.push(relative(rawDir, path)))
  if (all.length === 0) throw new UsageError(`no images under ${rawDir}`)
  await mkdir(outDir, { recursive: true })
  const summaryPath = join(outDir, SUMMARY)
  let summary: Summary = { options: key, photos: all.length, written: 0, noFace: [], multipleFaces: [], bad: [] }
  const previous = await readRegularFile(summaryPath, 'utf8').then(
    (text) => JSON.parse(text) as Summary,
    (error: unknown) => {
      // Absent or unparsable: a fresh run. A FIFO or device in its place is refused.
      if (error instanceof DataError) throw error
      return undefined
    },
  )
  if (previous) {
    if (previous.options !== key) throw new UsageError(`${outDir} was aligned with other options (${previous.options}); use another OUT_DIR`)
    summary = { ...previous, photos: all.length }
  }
  summary.notImages = notImages
  // One name per output, by the rule of derived-names.ts: x.jpg, x.png and x.webp, or a
  // photo g_1.jpg beside the second face of g.jpg, never write over each other.
  const rels = all.map((path) => relative(rawDir, path))
  const names = new Map(derivedNames(rels).map((name, i) => [rels[i]!, name]))
  const inputNames = new Set(names.values())
  const written = new Set<string>()
  const outputPath = (rel: string, k: number): string => join(outDir, `${faceName(names.get(rel)!, k, inputNames)}.jpg`)
  const claim = (path: string): string => {
    if (written.has(path)) throw new OutputError(path, 'would be written twice in this run (two inputs map to one output name); rename one of the inputs')
    written.add(path)
    return path
  }
  const known = new Set([...summary.noFace, ...summary.bad.map((b) => b.file)])
  // The first face's file is written last, so its presence means the photo is complete.
  const todo: string[] = []
  for (const path of all) {
    const rel = relative(rawDir, path)
    if (!known.has(rel) && !(await exists(outputPath(rel, 0)))) todo.push(path)
  }
  const given = o.detections ? await readDetections(resolve(o.detections)) : undefined
  if (given) options.detections = todo.map((path) => given[relative(rawDir, path)]) as FaceGeometry[][]
  const started = Date.now()
  const done0 = all.length - todo.length
  let done = 0
  let lastDraw = 0
  const progress = (final = false) => {
    const now = Date.now()
    if (!final && now - lastDraw < 2000) return
    lastDraw = now
    const rate = done / Math.max(1e-3, (now - started) / 1000)
    process.stderr.write(`align: ${done0 + done}/${all.length} photos (${rate.toFixed(1)}/s), ${summary.noFace.length} without a face\n`)
  }
  if (done0 > 0) process.stderr.write(`align: resuming, ${done0} of ${all.length} photos already done\n`)
  for await (const round of alignBatches(todo, options, defaultDetector(resolved), o.faces)) {
    const c = round.crops
    const per = resolved.size * resolved.size * 3
    const firsts: { path: string; row: number }[] = []
    const writes: Promise<void>[] = []
    for (let row = 0; row < c.shape[0]; row++) {
      const rel = relative(rawDir, todo[c.imageIndex[row]!]!)
      const k = o.faces === 'largest' ? 0 : c.faceIndex[row]!
      const path = claim(outputPath(rel, k))
      if (k === 0) firsts.push({ path, row })
      else writes.push(saveCrop(path, c.data.subarray(row * per, (row + 1) * per), resolved.size, o.quality))
    }
    await Promise.all(writes)
    await Promise.all(firsts.map(({ path, row }) => saveCrop(path, c.data.subarray(row * per, (row + 1) * per), resolved.size, o.quality)))
    summary.written += c.shape[0]
    for (const i of c.noFace) summary.noFace.push(relative(rawDir, todo[i]!))
    for (const b of c.bad) summary.bad.push({ file: relative(rawDir, b.file), reason: b.reason })
    c.detections.forEach((faces, i) => {
      if (faces.length > 1) summary.multipleFaces.push({ file: relative(rawDir, todo[round.start + i]!), faces: faces.length })
    })
    await writeAtomic(summaryPath, JSON.stringify(summary, null, 1))
    done += round.count
    progress()
  }
  await writeAtomic(summaryPath, JSON.stringify(summary, null, 1))
  progress(true)
  const result = { out: outDir, photos: all.length, aligned: done, resumedFrom: done0, written: summary.written, noFace: summary.noFace.length, multipleFaces: summary.multipleFaces.length, bad: summary.bad.length, notImages: notImages.length, summary: summaryPath }
  if (parsed.json) console.log(JSON.stringify(result))
  else console.log(`${all.length} photos → ${outDir}: ${summary.noFace.length} without a face, ${summary.multipleFaces.length} with several, ${summary.bad.length} skipped${notImages.length > 0 ? `, ${notImages.length} other files not read (not images)` : ''} (${summaryPath})`)
  return EXIT.ok
}

async function readDetections(file: string): Promise<Record<string, FaceGeometry[] | undefined>> {
  let value: unknown
  try {
    value = JSON.parse(await readRegularFile(file, 'utf8'))
  } catch (error) {
    throw new UsageError(`--detections: cannot read ${file} as JSON (${(error as Error).message})`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError(`--detections: ${file} must hold an object of photo paths to face lists`)
  return value as Record<string, FaceGeometry[] | undefined>
}
