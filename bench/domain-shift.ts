/**
 * A domain shift, measured (issue 30): low-resolution faces, as a user's CCTV crops. The
 * pretrained `dlib-resnet-v1`, and its triplet fine-tune, on the LFW unrestricted protocol:
 * train on the identities of folds 1–9, choose the threshold on folds 1–9's 5,400 pairs, test
 * on fold 10's 600 pairs, each on the clean chips and on the shifted ones.
 *
 *   nice -n 10 npx tsx bench/domain-shift.ts prepare [--threads N]
 *   nice -n 10 npx tsx bench/domain-shift.ts pretrained [--threads N]
 *   nice -n 10 npx tsx bench/domain-shift.ts train --recipe NAME --steps N --seed S [--threads N]
 *   npx tsx bench/domain-shift.ts table
 *
 * `prepare` makes the chips once, under runs/domain-shift/: this library's MTCNN on every
 * shipped photo (cached in mtcnn.json), the face nearest the photo's centre, its dlib chip
 * (`alignFaces(…, { mode: 'dlib' })`, 150×150; a photo without a face is resized whole, as
 * bench/lfw-pretrained.ts does), written losslessly as clean/Name/Name_NNNN.png. The shifted
 * copy, shifted/Name/Name_NNNN.png, is each chip downscaled to S×S and back up to 150×150,
 * both with sharp's (libvips') `'linear'` kernel (triangle filter, widened by the shrink factor
 * on the way down so it averages like an area filter; bilinear on the way up). S is drawn
 * from 24–32 px per photo by a hash of its path, so every run sees the same shifted set.
 * mixed/ holds both copies of every photo (hard links, the shifted one as Name_NNNN-low.png),
 * for recipes that train on clean and shifted faces together. The shift lives on disk, as a
 * user's own low-resolution photos would; no library option is involved.
 *
 * `pretrained` scores the model as it is; `train` fine-tunes it with a recipe of RECIPES below
 * (triplets on P×K batches, all but the last blocks frozen) for exactly N steps from seed S,
 * then scores it. Each appends a JSON line to runs/domain-shift/results.jsonl; `table` prints
 * them as the markdown table of bench/RESULTS.md. Accuracy is fold 10's at the threshold that
 * is best on folds 1–9 of the same condition (clean threshold for clean, shifted for shifted):
 * a user choosing a threshold on their own labelled CCTV pairs.
 */
import { createHash } from 'node:crypto'
import { appendFileSync, existsSync, linkSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import sharp from 'sharp'
import { alignFaces, evaluateVerification, FaceDetector, FaceNet, ImageFolder, LfwPairs, Trainer, type DetectedFace, type TrainerOptions } from '../src/index'
import { decodeImages } from '../src/data/decode'

const root = resolve(__dirname, '..', 'data', 'lfw')
const work = resolve(__dirname, '..', 'runs', 'domain-shift')
const CHIP = 150
const CHIP_BYTES = CHIP * CHIP * 3
/** The low resolution a shifted chip passes through: 24–32 px, inclusive. */
const LOW_MIN = 24
const LOW_MAX = 32

const args = process.argv.slice(2)
const command = args[0]
function flag(name: string): string | undefined {
  const at = args.indexOf(name)
  return at >= 0 ? args[at + 1] : undefined
}
const threads = Number(flag('--threads') ?? 2)

interface Recipe {
  /** What the recipe tries, for the table. */
  about: string
  /** The training folder under runs/domain-shift/. */
  data: 'shifted' | 'mixed'
  options: TrainerOptions
}

/**
 * The recipes of the search. All train on triplets (batch-all, mean over the active ones) on
 * P×K = 16×4 batches plus 8 single-image negatives, with flips and a mild random crop, and
 * freeze everything but the last blocks: the frozen part's forward is the cost of a step, its
 * backward is skipped.
 */
const BASE: TrainerOptions = {
  optimizer: 'adamw',
  weightDecay: 0,
  miner: 'batch-all',
  reducer: 'mean-active',
  identitiesPerBatch: 16,
  imagesPerIdentity: 4,
  negativesPerBatch: 8,
  augment: { cropScale: 0.95, flip: true },
}
const RECIPES: Record<string, Recipe> = {
  'shifted-last2': {
    about: 'shifted only; units.13 + fc train; lr 1e-4',
    data: 'shifted',
    options: { ...BASE, lr: 1e-4, trainLastBlocks: 2 },
  },
  'shifted-last4': {
    about: 'shifted only; units.11–13 + fc train; lr 3e-4',
    data: 'shifted',
    options: { ...BASE, lr: 3e-4, trainLastBlocks: 4 },
  },
  'mixed-last2': {
    about: 'clean + shifted; units.13 + fc train; lr 1e-4',
    data: 'mixed',
    options: { ...BASE, lr: 1e-4, trainLastBlocks: 2 },
  },
}

/** A size in LOW_MIN..LOW_MAX drawn from the photo's path relative to the LFW root: the same on every machine and run. */
function lowSide(relativePath: string): number {
  const hash = createHash('sha256').update(relativePath).digest()
  return LOW_MIN + (hash.readUInt32LE(0) % (LOW_MAX - LOW_MIN + 1))
}

/** The chip downscaled to side×side and back up to CHIP×CHIP, as raw RGB. */
async function shifted(chip: Uint8Array, side: number): Promise<Buffer> {
  const raw = (width: number) => ({ raw: { width, height: width, channels: 3 as const } })
  const small = await sharp(chip, raw(CHIP)).resize(side, side, { kernel: 'linear', fit: 'fill' }).raw().toBuffer()
  return sharp(small, raw(side)).resize(CHIP, CHIP, { kernel: 'linear', fit: 'fill' }).raw().toBuffer()
}

function png(pixels: Uint8Array, path: string): Promise<unknown> {
  mkdirSync(dirname(path), { recursive: true })
  return sharp(pixels, { raw: { width: CHIP, height: CHIP, channels: 3 } }).png().toFile(path)
}

/** A photo's chip path in one of the folders: Name/Name_NNNN.jpg → FOLDER/Name/Name_NNNN.png. */
function chipPath(folder: string, photo: string): string {
  return join(work, folder, relative(root, photo).replace(/\.[^.]+$/, '.png'))
}

function central(faces: readonly DetectedFace[], width: number, height: number): DetectedFace | undefined {
  const d = (f: DetectedFace): number => ((f.box[0] + f.box[2]) / 2 - width / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - height / 2) ** 2
  return [...faces].sort((a, b) => d(a) - d(b))[0]
}

async function prepare(): Promise<void> {
  const lfw = await LfwPairs.parse(join(root, 'pairs.txt'))
  const photos = lfw.imagePaths()
  const cached = join(work, 'mtcnn.json')
  let found: Record<string, DetectedFace[]>
  if (existsSync(cached)) found = JSON.parse(readFileSync(cached, 'utf8')) as Record<string, DetectedFace[]>
  else {
    found = {}
    const detector = await FaceDetector.load({ threads })
    try {
      for (let at = 0; at < photos.length; at += 64) {
        const chunk = photos.slice(at, at + 64)
        const faces = await detector.detectFiles(chunk)
        chunk.forEach((photo, i) => (found[relative(root, photo)] = faces[i]!))
        process.stderr.write(`\rdetect ${at + chunk.length}/${photos.length}`)
      }
    } finally {
      detector.dispose()
    }
    mkdirSync(work, { recursive: true })
    writeFileSync(cached, JSON.stringify(found))
  }
  // Every shipped photo is 150×150.
  const chosen = photos.map((photo) => central(found[relative(root, photo)] ?? [], 150, 150))
  const withFace = photos.flatMap((_, i) => (chosen[i] ? [i] : []))
  const noFace = photos.flatMap((_, i) => (chosen[i] ? [] : [i]))
  const chips = new Uint8Array(photos.length * CHIP_BYTES)
  const aligned = await alignFaces(withFace.map((i) => photos[i]!), { mode: 'dlib', size: CHIP, detections: withFace.map((i) => [chosen[i]!]), threads })
  withFace.forEach((photo, k) => chips.set(aligned.data.subarray(k * CHIP_BYTES, (k + 1) * CHIP_BYTES), photo * CHIP_BYTES))
  if (noFace.length > 0) {
    const whole = await decodeImages(noFace.map((i) => photos[i]!), { height: CHIP, width: CHIP })
    noFace.forEach((photo, k) => chips.set(whole.data.subarray(k * CHIP_BYTES, (k + 1) * CHIP_BYTES), photo * CHIP_BYTES))
  }
  const sides: Record<string, number> = {}
  for (let i = 0; i < photos.length; i++) {
    const name = relative(root, photos[i]!)
    const chip = chips.subarray(i * CHIP_BYTES, (i + 1) * CHIP_BYTES)
    sides[name] = lowSide(name)
    const clean = chipPath('clean', photos[i]!)
    const low = chipPath('shifted', photos[i]!)
    await png(chip, clean)
    await png(await shifted(chip, sides[name]), low)
    for (const [from, to] of [[clean, chipPath('mixed', photos[i]!)], [low, chipPath('mixed', photos[i]!).replace(/\.png$/, '-low.png')]] as const) {
      mkdirSync(dirname(to), { recursive: true })
      if (!existsSync(to)) linkSync(from, to)
    }
    if (i % 500 === 0) process.stderr.write(`\rchips ${i}/${photos.length}`)
  }
  writeFileSync(join(work, 'low-sides.json'), JSON.stringify(sides))
  console.log(JSON.stringify({ photos: photos.length, noFace: noFace.map((i) => relative(root, photos[i]!)), resampler: "sharp resize, kernel 'linear', down then up", lowSides: `${LOW_MIN}..${LOW_MAX}` }))
}

interface Scored {
  /** Fold 10's accuracy at the threshold best on folds 1–9. */
  fold10: number
  threshold: number
}

/** Fold 10's accuracy, clean and shifted, each at its own folds 1–9 threshold. */
async function score(model: FaceNet): Promise<{ clean: Scored; shifted: Scored }> {
  const lfw = await LfwPairs.parse(join(root, 'pairs.txt'))
  const photos = lfw.imagePaths()
  const index = new Map(photos.map((p, i) => [p, i]))
  const pairs = lfw.folds.map((fold) => fold.pairs.map((p) => ({ a: index.get(p.a)!, b: index.get(p.b)!, same: p.same })))
  const out: Record<string, Scored> = {}
  for (const condition of ['clean', 'shifted'] as const) {
    const chips = await decodeImages(photos.map((p) => chipPath(condition, p)), { height: CHIP, width: CHIP })
    const embeddings = await model.embed(chips)
    const result = evaluateVerification({ embeddings, dim: model.embeddingDim }, pairs)
    // The cross-validation's fold 10 is the protocol's: tested at the threshold of folds 1–9.
    out[condition] = { fold10: result.accuracy.perFold[9]!, threshold: result.foldThresholds[9]! }
  }
  return out as { clean: Scored; shifted: Scored }
}

function record(line: Record<string, unknown>): void {
  mkdirSync(work, { recursive: true })
  appendFileSync(join(work, 'results.jsonl'), `${JSON.stringify({ ...line, at: new Date().toISOString() })}\n`)
  console.log(JSON.stringify(line))
}

async function pretrained(): Promise<void> {
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads })
  record({ model: 'pretrained', ...(await score(model)) })
}

async function train(): Promise<void> {
  const name = flag('--recipe') ?? ''
  const recipe = RECIPES[name]
  if (!recipe) throw new Error(`--recipe must be one of ${Object.keys(RECIPES).join(', ')}, got '${name}'`)
  const steps = Number(flag('--steps'))
  const seed = Number(flag('--seed') ?? 1)
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${String(flag('--steps'))}`)
  const lfw = await LfwPairs.parse(join(root, 'pairs.txt'))
  const { trainIdentities } = lfw.unrestrictedSplit(9)
  const folder = (await ImageFolder.open(join(work, recipe.data))).subset(trainIdentities)
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads })
  const started = Date.now()
  let lastLoss = 0
  await new Trainer(model, { ...recipe.options, seed }).fit(folder, {
    epochs: 1000,
    maxSteps: steps,
    onStep: (s) => {
      lastLoss = s.loss
      if (s.step % 10 === 0) process.stderr.write(`step ${s.step} loss ${s.loss.toFixed(4)} active ${(100 * s.activeFraction).toFixed(1)}% ${(s.stepMs / 1000).toFixed(2)} s\n`)
    },
  })
  const trainSeconds = (Date.now() - started) / 1000
  record({ model: 'fine-tune', recipe: name, seed, steps, images: folder.length, identities: trainIdentities.length, trainSeconds, lastLoss, ...(await score(model)) })
}

function table(): void {
  const lines = readFileSync(join(work, 'results.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown> & { clean: Scored; shifted: Scored })
  const pct = (v: number) => `${(100 * v).toFixed(2)}%`
  const base = lines.find((l) => l.model === 'pretrained')
  const delta = (v: number, b: number | undefined) => (b === undefined ? '' : ` (${v >= b ? '+' : '−'}${Math.abs(100 * (v - b)).toFixed(2)})`)
  const cells = (clean: number, low: number) => `${pct(clean)}${delta(clean, base?.clean.fold10)} | ${pct(low)}${delta(low, base?.shifted.fold10)}`
  console.log('| model | recipe | seed | steps | clean fold 10 | shifted fold 10 |')
  console.log('|---|---|---:|---:|---:|---:|')
  for (const l of lines) console.log(`| ${String(l.model)} | ${String(l.recipe ?? '')} | ${String(l.seed ?? '')} | ${String(l.steps ?? '')} | ${cells(l.clean.fold10, l.shifted.fold10)} |`)
  // The mean over seeds of each recipe and step count run with more than one seed.
  const runs = new Map<string, typeof lines>()
  for (const l of lines.filter((l) => l.model === 'fine-tune')) runs.set(`${String(l.recipe)}@${String(l.steps)}`, [...(runs.get(`${String(l.recipe)}@${String(l.steps)}`) ?? []), l])
  for (const [key, group] of runs) {
    if (group.length < 2) continue
    const mean = (pick: (l: (typeof lines)[number]) => number) => group.reduce((sum, l) => sum + pick(l), 0) / group.length
    const [recipe, steps] = key.split('@')
    console.log(`| **fine-tune, mean of ${group.length}** | ${recipe} | ${group.map((l) => String(l.seed)).join(', ')} | ${steps} | ${cells(mean((l) => l.clean.fold10), mean((l) => l.shifted.fold10))} |`)
  }
}

async function main(): Promise<void> {
  if (command === 'prepare') await prepare()
  else if (command === 'pretrained') await pretrained()
  else if (command === 'train') await train()
  else if (command === 'table') table()
  else throw new Error(`usage: domain-shift.ts prepare | pretrained | train --recipe ${Object.keys(RECIPES).join('|')} --steps N --seed S | table`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
