import { existsSync, renameSync, writeFileSync } from 'node:fs'
import { readdir, rm, rmdir, stat } from 'node:fs/promises'
import { constants } from 'node:os'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { ImageFolder } from '../data/image-folder'
import { Rng } from '../rng'
import { LfwPairs } from '../data/lfw-pairs'
import type { Device } from '../device'
import { DataError, FaceNetError, InvalidArgumentError, OutputError } from '../errors'
import { FLOAT32_MAX } from '../check'
import { FaceNet, PRETRAINED_MODELS, type PretrainedModel } from '../model'
import { chooseThreshold } from '../training/threshold'
import { binding } from '../binding'
import { acquireRunLock } from '../run-lock'
import { checkpointStep, isCheckpoint, latestCheckpoint, partialCheckpointWriter } from '../training/checkpoints'
import { Trainer, type TrainerOptions } from '../training/trainer'
import { META } from './model'
import { ARCHS, DEFAULT_ARCH, type Arch, type LossType, type MiningMode, type OnBadImage } from '../options'
import type { LossPhaseOptions } from '../training/objective'
import { AUGMENT } from '../tables/augment'
import { LOSS } from '../tables/loss'
import { MINING } from '../tables/mining'
import { option, optionTable, resolveOption } from '../tables/table'
import { TRAINING } from '../tables/training'
import { canonicalKeys, deviceSchema, EXIT, kebab, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, type CommandSpec, type FlagSpec } from './options'
import { flagsOf, schemaOf, setIn, type CommandOption } from './table-flags'
import { ProgressBar } from './progress'
import { readRegularFile } from '../regular-file'
import { distributedFromEnv } from '../training/distributed'
import { launch, splitNproc } from './launch'


/** The LFW of a clone (`data/lfw`), two levels above this file in both src/ and dist/. */
const CLONE_LFW = resolve(__dirname, '..', '..', 'data', 'lfw')

/**
 * The LFW that `--lfw` means: `$FACENET_LFW`, else a clone's `data/lfw`. The npm package
 * does not ship the 76 MB of images, so an installed package says where to get them
 * instead of failing on a path inside node_modules.
 */
export function lfwRoot(env: NodeJS.ProcessEnv = process.env): string {
  const root = env.FACENET_LFW ? resolve(env.FACENET_LFW) : CLONE_LFW
  if (!existsSync(join(root, 'pairs.txt'))) {
    throw new UsageError(
      `--lfw needs LFW's images and View 2 pairs.txt, which the npm package does not ship (76 MB); ${env.FACENET_LFW ? `FACENET_LFW=${root} has no pairs.txt` : `looked in ${root}`}. ` +
        'Get them from a clone of the facenet-torch repository (its data/lfw) and set FACENET_LFW=/path/to/clone/data/lfw, ' +
        'or use your own folders: train --data DIR, eval --pairs pairs.txt --data DIR',
    )
  }
  return root
}

/**
 * `facenet train`'s own options (the data, the network, the run's budget and folder); the
 * trainer's come from the training, mining, loss and augmentation tables. Its defaults are
 * sized for a laptop CPU, where a first run happens: the `tiny` network on 32×4 batches
 * takes a fraction of a second per step, where the paper's `nn1` on 45×40 batches takes
 * ~40 s and 2.4 GB on 2 cores. The API's defaults stay the paper's; the paper's recipe from
 * the CLI is `--arch nn1 --identities-per-batch 45 --images-per-identity 40`.
 */
const TRAIN_RECIPE = optionTable({
  data: option<string>({ kind: 'string', value: 'DIR', help: 'training images, one folder per identity (DIR/Name/*.jpg)' }),
  lfw: option<boolean>({ kind: 'boolean', help: "train on the identities of LFW View 2 folds 1–9 (fold 10 is for eval); a clone's data/lfw, or $FACENET_LFW" }),
  arch: option<string>({ kind: 'enum', values: ARCHS, default: DEFAULT_ARCH, value: 'ARCH', help: "network (the paper's: nn1 with --identities-per-batch 45 --images-per-identity 40)", cli: { default: 'tiny' } }),
  embeddingDim: option<number>({ kind: 'number', schema: positiveInt, defaultText: "128, the paper's", value: 'N', help: 'embedding length' } as CommandOption<number>),
  // A flag gives "32,64,128"; config.json keeps the parsed list.
  tinyWidths: option<number[]>({
    kind: 'list',
    schema: z.preprocess(
      (value) => (typeof value === 'string' ? value.split(',').map(Number) : value),
      z.array(positiveInt.max(4096)).min(2, 'expected 2 or more channel counts such as 32,64,128,256'),
    ),
    defaultText: '32,64,128,256',
    value: 'W,W,…',
    help: "arch 'tiny': channels per stage",
  } as CommandOption<number[]>),
  inputSize: option<number>({ kind: 'number', schema: positiveInt.max(1024), defaultText: '64', value: 'PX', help: "arch 'tiny': input side in pixels" } as CommandOption<number>),
  from: option<string>({ kind: 'string', value: 'MODEL', help: `fine-tune MODEL (${PRETRAINED_MODELS.join(', ')}, a .safetensors or a dlib .dat): its arch, input size, preprocessing and alignment are kept` }),
  holdout: option<number>({
    kind: 'number',
    schema: z.number().int().min(0),
    defaultText: '10%, at least 2; 0 keeps none and stores no threshold',
    value: 'N',
    help: 'with --from: identities held out to choose the stored threshold on',
  } as CommandOption<number>),
  // The run's length is part of the recipe: --resume goes on to the same epoch count.
  epochs: option<number>({ kind: 'number', schema: positiveInt, value: 'N', help: 'epochs in total, resumed ones included', cli: { default: 10 } } as CommandOption<number>),
  noAugment: option<boolean>({ kind: 'boolean', help: 'no random crop, flip, rotation or brightness (the API\'s augment: false)' }),
  // The margin of --loss is --margin; beside a classification loss the triplets have their own.
  tripletMargin: option<number>({ kind: 'number', schema: z.number().min(0).max(FLOAT32_MAX), defaultText: `${MINING.margin.default}`, value: 'X', help: 'triplet margin α beside a classification --loss' } as CommandOption<number>),
  tripletFrom: option<number>({ kind: 'number', schema: positiveInt, value: 'STEP', help: 'with a classification --loss: train with the triplet loss alone from step STEP on (a warm-up, then triplets)' } as CommandOption<number>),
})

/** What a run's `config.json` does not hold: how this invocation runs, not what it trains. */
const TRAIN_RUN = optionTable({
  out: option<string>({ kind: 'string', value: 'DIR', help: 'run folder: checkpoints/, train.jsonl, model.safetensors, config.json' }),
  minutes: option<number>({ kind: 'number', schema: z.number().positive(), value: 'M', help: 'stop (with a checkpoint) after M minutes of this run' } as CommandOption<number>),
  maxSteps: option<number>({ kind: 'number', schema: positiveInt, value: 'N', help: 'stop (with a checkpoint) at step N in total' } as CommandOption<number>),
  resume: option<boolean | string>({ kind: 'boolean', schema: z.union([z.boolean(), z.string().min(1)]), value: '[CKPT]', help: "continue from CKPT, or from the newest checkpoint in --out; the recipe comes from --out's config.json" } as CommandOption<boolean | string>),
  overwrite: option<boolean>({ kind: 'boolean', help: 'start afresh in an --out that already holds a run (deletes its checkpoints and log)' }),
  device: option<string>({ kind: 'string', schema: deviceSchema, cli: { default: 'auto' }, value: 'DEV', help: "'auto', 'cpu', 'cuda' or 'cuda:N'" } as CommandOption<string>),
  threads: option<number>({ kind: 'number', schema: positiveInt, defaultText: 'the CPU count', value: 'N', help: 'libtorch threads' } as CommandOption<number>),
  verify: option<boolean>({ kind: 'boolean', help: 'decode every image once before training and report every bad one; stop if any (unless --on-bad-image skip)' }),
})

/** The tables `facenet train` makes its flags of, in `--help`'s order; one key, one flag. */
const TRAIN_TABLES = [TRAIN_RECIPE, TRAINING, MINING, LOSS, AUGMENT] as const

/** What a run's `config.json` holds: the recipe, so `--resume` continues with the same one. */
const recipe = Object.assign({}, ...TRAIN_TABLES.map((table) => schemaOf(table))) as Record<string, z.ZodType>
const RECIPE_KEYS = Object.keys(recipe)

const schema = z.strictObject({ ...recipe, ...schemaOf(TRAIN_RUN) }) as z.ZodObject<Record<string, z.ZodType>>

/** The options as `train` reads them (zod's inferred type is too wide for a generated shape). */
type TrainFlags = {
  data?: string
  lfw?: boolean
  arch: Arch
  embeddingDim?: number
  tinyWidths?: number[]
  inputSize?: number
  from?: string
  freeze?: string[]
  trainLastBlocks?: number
  holdout?: number
  epochs: number
  mining?: MiningMode
  loss?: LossType
  margin?: number
  scale?: number
  easyMargin?: boolean
  centerWeight?: number
  tripletWeight?: number
  tripletMargin?: number
  tripletFrom?: number
  identitiesPerBatch: number
  negativesPerBatch?: number
  centerCrop?: number
  noAugment?: boolean
  seed?: number
  onBadImage?: OnBadImage
  tensorboard?: string
  out?: string
  minutes?: number
  maxSteps?: number
  resume?: boolean | string
  overwrite?: boolean
  device: string
  threads?: number
  verify?: boolean
}

export const trainSpec: CommandSpec<typeof schema> = {
  name: 'train',
  summary: SUMMARIES.train,
  usage: 'facenet train (--data DIR | --lfw) --out runs/NAME [options]',
  flags: Object.assign({}, ...[TRAIN_RECIPE, TRAIN_RUN, ...TRAIN_TABLES.slice(1)].map((table) => flagsOf(table))) as Record<string, FlagSpec>,
  schema,
  notes: [
    'Ctrl-C (SIGINT), SIGTERM and SIGHUP stop after the step in flight, write a checkpoint and',
    "model.safetensors, and exit with 128 + the signal's number (130, 143, 129);",
    "'facenet train --out DIR --resume' continues from there. A second signal quits at once, with the same exit code; the last complete checkpoint stays.",
    'One run at a time per --out: a second one exits with 2, naming the process that holds the folder.',
    '--nproc N trains data-parallel on N local processes (CPU, Gloo); RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun\'s variables) make this process one rank of a run across machines.',
    'Old flag names (--batch-identities, --batch-images, --negatives, --rotation, --skip-bad-images) still work in this release.',
  ],
}

/** `--resume` takes an optional value, which node's parseArgs cannot express; give it its own token. */
function splitResume(argv: string[]): { argv: string[]; resumePath?: string } {
  const out: string[] = []
  let resumePath: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg.startsWith('--resume=')) {
      resumePath = arg.slice('--resume='.length)
      out.push('--resume')
    } else if (arg === '--resume' && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('-')) {
      resumePath = argv[++i]
      out.push('--resume')
    } else out.push(arg)
  }
  return { argv: out, resumePath }
}

async function readJson(file: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readRegularFile(file, 'utf8')) as Record<string, unknown>
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new UsageError(`${file} is not valid JSON (${(error as Error).message})`)
  }
}

/** The value of `--out` from argv or the config, before full parsing (for the saved recipe). */
function peekOut(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') return argv[i + 1]
    if (argv[i]!.startsWith('--out=')) return argv[i]!.slice(6)
  }
  return undefined
}

/** The files a run writes into `--out`, and only those: what `--overwrite` removes. */
async function removeRun(out: string, checkpointDir: string): Promise<void> {
  let names: string[] = []
  try {
    names = await readdir(checkpointDir)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
  for (const name of names) {
    // Checkpoints, and the temporary files of writes a killed run left behind.
    if (isCheckpoint(name) || partialCheckpointWriter(name) !== undefined) await rm(join(checkpointDir, name), { force: true })
  }
  await rmdir(checkpointDir).catch(() => {}) // only if nothing else is in it
  for (const name of ['train.jsonl', 'model.safetensors', 'config.json']) {
    // A folder of that name is not a file the run wrote.
    if ((await stat(join(out, name)).catch(() => undefined))?.isFile()) await rm(join(out, name))
  }
}

/** Whether `--out` holds (part of) a run: a checkpoint, a log or a model. */
async function holdsRun(out: string, checkpointDir: string): Promise<boolean> {
  if (await latestCheckpoint(checkpointDir)) return true
  for (const name of ['train.jsonl', 'model.safetensors']) {
    if (await stat(join(out, name)).then(() => true, () => false)) return true
  }
  return false
}

/**
 * The options whose names the trainer's and samplers' messages use, and which flags set
 * them; a camelCase name is always an option's, a one-word one only where listed (`margin`,
 * not `loss` or `mining`, which are words in the messages too).
 */
const NAMED_IN_MESSAGES: Record<string, string> = {
  ...Object.fromEntries(TRAIN_TABLES.flatMap((table) => Object.keys(flagsOf(table))).filter((key) => /[A-Z]/.test(key)).map((key) => [key, key])),
  lr: 'lr',
  margin: 'margin',
  momentum: 'momentum',
  seed: 'seed',
  P: 'identitiesPerBatch',
  K: 'imagesPerIdentity',
  negatives: 'negativesPerBatch',
}

/** A trainer's message with option names replaced by the flags the user gave them as. */
function withFlags(message: string, flagNames: Record<string, string>): string {
  const flagOf = (key: string) => flagNames[key] ?? `--${kebab(key)}`
  return message.replace(/\bloss(?:\[\d+\])?\.([A-Za-z]+)|\b[A-Za-z]+\b/g, (word, lossField?: string) =>
    lossField ? flagOf(lossField) : Object.hasOwn(NAMED_IN_MESSAGES, word) ? flagOf(NAMED_IN_MESSAGES[word]!) : word,
  )
}

/**
 * The Trainer's `loss` from the flags, and the triplet margin α. Flags that shape another
 * loss than the one chosen are refused rather than ignored.
 */
function lossOptions(o: TrainFlags): { loss: LossPhaseOptions | LossPhaseOptions[]; tripletMargin: number | undefined } {
  const type = o.loss ?? (LOSS.loss.default as LossType)
  const only = (flag: string, value: unknown, types: readonly string[]) => {
    if (value !== undefined && !types.includes(type)) throw new UsageError(`${flag} applies to --loss ${types.join(' or ')}, not '${type}'`)
  }
  only('--scale', o.scale, ['arcface', 'cosface'])
  only('--easy-margin', o.easyMargin, ['arcface'])
  only('--center-weight', o.centerWeight, ['softmax-center'])
  const classifying = ['arcface', 'cosface', 'softmax-center']
  only('--triplet-weight', o.tripletWeight, classifying)
  only('--triplet-margin', o.tripletMargin, classifying)
  only('--triplet-from', o.tripletFrom, classifying)
  // The triplet loss's margin is the trainer's α; unset, the trainer's default.
  if (type === 'triplet') return { loss: { type: 'triplet' }, tripletMargin: o.margin }
  if (type === 'softmax-center' && o.margin !== undefined) throw new UsageError("--margin applies to --loss triplet, arcface or cosface, not 'softmax-center'")
  const first = {
    type,
    ...(o.margin !== undefined ? { margin: o.margin } : {}),
    ...(o.scale !== undefined ? { scale: o.scale } : {}),
    ...(o.easyMargin !== undefined ? { easyMargin: o.easyMargin } : {}),
    ...(o.centerWeight !== undefined ? { centerWeight: o.centerWeight } : {}),
    ...(o.tripletWeight !== undefined && o.tripletWeight > 0 ? { tripletWeight: o.tripletWeight } : {}),
  } as LossPhaseOptions
  return { loss: o.tripletFrom !== undefined ? [first, { type: 'triplet', fromStep: o.tripletFrom }] : first, tripletMargin: o.tripletMargin }
}

/** The model `--from` names: a pretrained one by name, else a weights file (safetensors or dlib .dat). */
async function loadSource(from: string, device: Device, threads: number | undefined): Promise<FaceNet> {
  const options = { device, ...(threads ? { threads } : {}) }
  if ((PRETRAINED_MODELS as readonly string[]).includes(from)) return FaceNet.pretrained(from as PretrainedModel, options)
  return FaceNet.load(resolve(from), options)
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/**
 * Ends the process now with `code` (a second signal). The 'exit' listeners run first (the
 * run lock's frees the folder); then the native `_exit` skips the teardown that
 * `process.exit` would do: libtorch's static destructors, run while the worker thread is
 * still inside a step, segfault (exit 139) about half the time. Checkpoints are written to
 * a temporary name and renamed, so the last complete one survives this as it survives a
 * SIGKILL.
 */
function quitNow(code: number): never {
  process.exitCode = code
  process.emit('exit', code)
  binding.exitImmediately(code)
  throw new Error('unreachable: _exit returned')
}

export async function train(rawArgv: string[]): Promise<number> {
  const { nproc, rest } = splitNproc(rawArgv)
  if (nproc !== undefined) return launch(nproc, rest)
  // A rank of a data-parallel run (--nproc, torchrun, a cluster script): only rank 0
  // touches --out; every rank trains.
  const distributed = distributedFromEnv()
  const leader = (distributed?.rank ?? 0) === 0
  const { argv, resumePath } = splitResume(rawArgv)
  // A resumed run starts from its saved recipe; flags and --config still win over it.
  let base: Record<string, unknown> = {}
  const resuming = argv.includes('--resume')
  const peeked = peekOut(argv)
  if (resuming && peeked) {
    const configFile = join(resolve(peeked), 'config.json')
    const saved = await readJson(configFile)
    // A run saved before a flag's rename keeps its old keys; they mean the same options.
    if (saved) base = Object.fromEntries(Object.entries(canonicalKeys(trainSpec.flags, saved, configFile).values).filter(([k]) => RECIPE_KEYS.includes(k)))
  }
  const parsed = await parseCommand(trainSpec, argv, base)
  if (parsed.help) return printHelp(trainSpec)
  const o = parsed.options as TrainFlags
  const flag = (key: keyof TrainFlags) => parsed.flagNames[key] ?? `--${kebab(key)}`
  if (resumePath !== undefined) o.resume = resumePath
  if (o.out === undefined) throw new UsageError('--out: is required')
  if ((o.data === undefined) === (o.lfw !== true)) throw new UsageError('give exactly one of --data DIR and --lfw')
  if ((o.tinyWidths !== undefined || o.inputSize !== undefined) && o.arch !== 'tiny') throw new UsageError(`--tiny-widths and --input-size shape --arch tiny, not '${o.arch}'`)
  const seed = resolveOption(TRAINING, 'seed', o)
  if (o.from !== undefined) {
    const shaping = (['arch', 'embeddingDim', 'tinyWidths', 'inputSize'] as const).filter((k) => parsed.fromFlags.has(k))
    if (shaping.length > 0) throw new UsageError(`--from keeps the source model's shape; drop ${shaping.map(flag).join(', ')}`)
  } else if (o.freeze !== undefined || o.trainLastBlocks !== undefined || o.holdout !== undefined) {
    throw new UsageError('--freeze, --train-last-blocks and --holdout shape a fine-tune: give --from MODEL')
  }
  const { loss, tripletMargin } = lossOptions(o)
  if (o.identitiesPerBatch === 1 && o.negativesPerBatch === 0) {
    throw new UsageError(`${flag('identitiesPerBatch')} 1 with ${flag('negativesPerBatch')} 0 makes batches of one identity, which hold no triplets; raise either`)
  }
  const out = resolve(o.out)
  const outInfo = await stat(out).catch(() => undefined)
  if (outInfo && !outInfo.isDirectory()) throw new UsageError(`--out: ${out} exists and is not a folder`)
  const checkpointDir = join(out, 'checkpoints')
  const logFile = join(out, 'train.jsonl')
  const modelFile = join(out, 'model.safetensors')

  // Held from before anything in --out is read or changed to after the model is saved.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars -- held by scope: released when train() returns or throws
  await using lock = leader ? await acquireRunLock(out) : undefined
  let resume: string | undefined
  if (o.resume) {
    resume = typeof o.resume === 'string' ? resolve(o.resume) : await latestCheckpoint(checkpointDir)
    if (!resume) throw new UsageError(`--resume: no checkpoint in ${checkpointDir}`)
  } else if (!leader) {
    // Rank 0 checks and clears --out.
  } else if (o.overwrite) {
    await removeRun(out, checkpointDir)
  } else if (await holdsRun(out, checkpointDir)) {
    throw new UsageError(`${out} already holds a run; pass --resume to continue it or --overwrite to start afresh`)
  }

  // The bar exists once the run starts; lines before it (the dataset check) go to stderr.
  const ui: { progress?: ProgressBar } = {}
  // Every rank of a data-parallel run says the same; rank 0 speaks for them.
  const say = (line: string) => (!leader ? undefined : parsed.json || !ui.progress ? process.stderr.write(`${line}\n`) : ui.progress.log(line))
  const skip = o.onBadImage === 'skip'
  const open = async (root: string) => {
    const found: string[] = []
    const folder = await ImageFolder.open(root, {
      verify: o.verify,
      onBadImage: skip || o.verify ? 'skip' : 'error',
      onWarning: (error) => found.push(error.message),
    })
    if (found.length > 0 && !skip) {
      for (const line of found) process.stderr.write(`bad image: ${line}\n`)
      throw new DataError(root, `${found.length} bad image(s) or folder(s), listed above; fix or remove them, or pass --on-bad-image skip`)
    }
    for (const line of found) say(`skipped: ${line}`)
    if (o.verify) say(`verified ${folder.length} images of ${folder.identities.length} identities${found.length ? `, ${found.length} left out` : ''}`)
    return folder
  }
  let folder: ImageFolder
  if (o.lfw) {
    const LFW_ROOT = lfwRoot()
    const lfw = await LfwPairs.parse(join(LFW_ROOT, 'pairs.txt'))
    const wanted = new Set(lfw.unrestrictedSplit(9).trainIdentities)
    const all = await open(LFW_ROOT)
    // Skipped identities (no readable image left) are not in the folder to subset.
    folder = all.subset(all.identities.filter((name) => wanted.has(name)))
  } else {
    folder = await open(resolve(o.data!))
  }
  // A fine-tune's threshold is chosen again on identities it never trained on.
  let heldOut: ImageFolder | undefined
  if (o.from !== undefined) {
    const multi = folder.identities.filter((_, label) => folder.counts[label]! >= 2)
    const count = o.holdout ?? Math.max(2, Math.round(multi.length / 10))
    if (count > 0) {
      if (count >= multi.length) throw new UsageError(`--holdout ${count}: the data has ${multi.length} identities with 2 or more images; hold out fewer (or --holdout 0)`)
      const rng = new Rng(seed, 0x401d)
      const order = [...multi]
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.int(i + 1)
        ;[order[i], order[j]] = [order[j]!, order[i]!]
      }
      const held = new Set(order.slice(0, count))
      heldOut = folder.subset(held)
      folder = folder.subset(folder.identities.filter((name) => !held.has(name)))
    }
  }

  // What the user set (and the CLI's own defaults): on --resume the trainer fills in the
  // rest as it did, and options that shape another loss stay unset.
  const saved = Object.fromEntries(RECIPE_KEYS.filter((k) => (o as Record<string, unknown>)[k] !== undefined).map((k) => [k, (o as Record<string, unknown>)[k]]))
  if (saved.data !== undefined) saved.data = resolve(String(saved.data))
  if (saved.tensorboard !== undefined) saved.tensorboard = resolve(String(saved.tensorboard))
  const configFile = join(out, 'config.json')
  // Written once this run has trained its first step: a run refused before that (another
  // --loss or --data for the checkpoint, a bad option) leaves the saved recipe as it was,
  // so a later plain --resume still works.
  let configWritten = false
  const writeConfig = () => {
    if (configWritten || !leader) return
    configWritten = true
    try {
      writeFileSync(`${configFile}.tmp`, JSON.stringify(saved, null, 2) + '\n')
      renameSync(`${configFile}.tmp`, configFile)
    } catch (cause) {
      throw new OutputError(configFile, `cannot be written (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
    }
  }

  using model = o.from !== undefined ? await loadSource(o.from, o.device as Device, o.threads) : await FaceNet.create({
    arch: o.arch,
    ...(o.embeddingDim !== undefined ? { embeddingDim: o.embeddingDim } : {}),
    seed,
    device: o.device as Device,
    ...(o.arch === 'tiny' && (o.tinyWidths || o.inputSize) ? { tiny: { ...(o.tinyWidths ? { widths: o.tinyWidths } : {}), ...(o.inputSize ? { inputSize: o.inputSize } : {}) } } : {}),
    ...(o.threads ? { threads: o.threads } : {}),
  })
  // Only what the user set (or the CLI sizes for a laptop): the trainer fills in the rest.
  const trainerOptions: TrainerOptions = {
    ...setIn(TRAINING, o),
    ...setIn(MINING, o),
    ...setIn(LOSS, o, ['reducer']),
    loss,
    ...(tripletMargin !== undefined ? { margin: tripletMargin } : {}),
    augment: o.noAugment ? false : setIn(AUGMENT, o),
    checkpointDir,
    logFile,
    ...(distributed ? { distributed } : {}),
  }
  let trainer: Trainer
  let stepsPerEpoch: number | undefined
  try {
    trainer = new Trainer(model, trainerOptions)
    stepsPerEpoch = trainer.stepsPerEpoch(folder)
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(withFlags(error.message, parsed.flagNames))
    throw error
  }
  const startStep = resume ? (checkpointStep(resume) ?? 0) : 0
  const maxSeconds = o.minutes !== undefined ? o.minutes * 60 : undefined
  const progress = new ProgressBar({ epochs: o.epochs, stepsPerEpoch, maxSteps: o.maxSteps, maxSeconds, startStep })
  ui.progress = progress
  say(
    `training ${o.arch} with the ${o.loss ?? LOSS.loss.default} loss${o.tripletWeight ? ` + ${o.tripletWeight} × triplet` : ''}${o.tripletFrom !== undefined ? `, triplet alone from step ${o.tripletFrom}` : ''} on ${folder.length} images of ${folder.identities.length} identities` +
      (resume ? `, resuming from ${resume}` : '') +
      ` → ${out}`,
  )

  const controller = new AbortController()
  let stopSignal: (typeof SIGNALS)[number] | undefined
  const exitCodeOf = (signal: (typeof SIGNALS)[number]) => 128 + constants.signals[signal]
  const onSignal = (signal: (typeof SIGNALS)[number]) => {
    // A second signal means "now": skip the checkpoint.
    if (stopSignal) quitNow(exitCodeOf(signal))
    stopSignal = signal
    // A closed terminal (SIGHUP) fails writes to it; they must not end the run before its checkpoint.
    if (signal === 'SIGHUP') for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {})
    progress.log(`${signal === 'SIGINT' ? 'interrupted' : signal}: finishing the step in flight and writing a checkpoint (${signal === 'SIGINT' ? 'Ctrl-C' : 'a signal'} again to quit now)`)
    controller.abort()
  }
  const handlers = SIGNALS.map((signal) => [signal, () => onSignal(signal)] as const)
  for (const [signal, handler] of handlers) process.on(signal, handler)
  const started = Date.now()
  let result
  try {
    result = await trainer.fit(folder, {
      epochs: o.epochs,
      ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps } : {}),
      ...(maxSeconds !== undefined ? { maxSeconds } : {}),
      signal: controller.signal,
      ...(resume ? { resume } : {}),
      onStep: (s) => {
        writeConfig()
        if (leader) progress.step(s)
      },
      onEpoch: (e) => say(`epoch ${e.epoch + 1}/${o.epochs}: ${e.steps} steps, mean loss ${e.meanLoss.toFixed(4)}, ${e.seconds.toFixed(1)} s`),
      onWarning: (message) => say(`warning: ${message}`),
    })
  } catch (error) {
    // Options the trainer refuses only once it sees the data, e.g. one identity per batch.
    if (error instanceof InvalidArgumentError) throw new UsageError(withFlags(error.message, parsed.flagNames))
    if (error instanceof DataError && !skip && / saved in /.test(error.message)) {
      error.message += `; continue with: facenet train --out ${o.out} --resume (add --on-bad-image skip to leave bad images out)`
    }
    throw error
  } finally {
    // Once a signal has stopped the run, a second one that arrives while it winds down
    // (the sender may be descheduled between two kills) still means "quit now", with the
    // signal's code, rather than the default action that would report no exit code at all.
    if (!stopSignal) for (const [signal, handler] of handlers) process.off(signal, handler)
    progress.end()
  }
  // Rank 0 saves the model (every rank holds the same weights) and reports.
  if (!leader) return stopSignal && result.stopped === 'aborted' ? quitNow(exitCodeOf(stopSignal)) : EXIT.ok
  // The checkpoint holds the run; the model file is a convenience that may fail on its own
  // (a full disk) without hiding what the run did.
  let saveError: FaceNetError | undefined
  // A fine-tune keeps the source's metadata (its alignment) with its weights, but not its
  // threshold nor its embedding space, which training moved: `save` sees to both.
  const metadata: Record<string, string> = { [META.centerCrop]: String(trainer.options.centerCrop), steps: String(result.steps) }
  if (o.from !== undefined) {
    metadata.fineTunedFrom = o.from
    if (heldOut) {
      const chosen = await chooseThreshold(model, heldOut, { seed, centerCrop: trainer.options.centerCrop })
      Object.assign(metadata, { [META.threshold]: String(chosen.threshold), [META.thresholdMetric]: chosen.metric, [META.thresholdFrom]: `${chosen.pairs} held-out pairs of ${heldOut.identities.length} identities (accuracy ${(100 * chosen.accuracy).toFixed(2)}%)` })
      say(`threshold ${chosen.threshold.toFixed(4)} chosen on ${chosen.pairs} pairs of ${heldOut.identities.length} held-out identities (accuracy ${(100 * chosen.accuracy).toFixed(2)}%)`)
    }
  }
  await model.save(modelFile, { metadata }).catch((error: unknown) => {
    saveError = error instanceof FaceNetError ? error : new OutputError(modelFile, String((error as Error)?.message ?? error))
  })
  const summary = {
    stopped: result.stopped,
    steps: result.steps,
    seconds: (Date.now() - started) / 1000,
    model: saveError ? null : modelFile,
    checkpoint: result.lastCheckpoint ?? null,
    config: configFile,
    log: logFile,
    ...(stopSignal ? { signal: stopSignal } : {}),
    ...(saveError ? { error: saveError.message } : {}),
  }
  if (parsed.json) console.log(JSON.stringify(summary))
  else {
    console.log(`${result.stopped === 'aborted' ? 'interrupted' : 'done'} (${result.stopped}) at step ${result.steps} after ${summary.seconds.toFixed(1)} s`)
    if (!saveError) console.log(`model: ${modelFile}`)
    if (result.lastCheckpoint) console.log(`checkpoint: ${result.lastCheckpoint}`)
    if (result.stopped !== 'completed') console.log(`continue with: facenet train --out ${o.out} --resume${distributed ? ` on ${distributed.worldSize} ranks again (--nproc ${distributed.worldSize}, or as this run was started)` : ''}`)
  }
  if (saveError) throw saveError
  const code = stopSignal && result.stopped === 'aborted' ? exitCodeOf(stopSignal) : EXIT.ok
  // After a signal, a second one may arrive while the process winds down; once Node has
  // begun to exit, its handlers are gone and that signal would kill it (no exit code).
  // Everything is written (stdout and stderr writes to pipes and files are synchronous), so
  // quit here, handlers still in place.
  if (stopSignal) quitNow(code)
  return code
}
