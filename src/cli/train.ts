import { existsSync, renameSync, writeFileSync } from 'node:fs'
import { readdir, rm, rmdir, stat } from 'node:fs/promises'
import { constants } from 'node:os'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { ImageFolder } from '../data/image-folder'
import { Rng } from '../rng'
import { LfwPairs } from '../data/lfw-pairs'
import { PKSampler, ShuffleSampler } from '../data/sampler'
import type { Device } from '../device'
import { DataError, FaceNetError, InvalidArgumentError, OutputError } from '../errors'
import { FaceNet, PRETRAINED_MODELS, type PretrainedModel } from '../model'
import { chooseThreshold } from '../training/threshold'
import { binding } from '../binding'
import { acquireRunLock } from '../run-lock'
import { checkpointStep, isCheckpoint, latestCheckpoint, partialCheckpointWriter } from '../training/checkpoints'
import { Trainer, type TrainerOptions } from '../training/trainer'
import { META } from './model'
import { ARCHS, LOSSES, MINERS, MINING_MODES, OPTIMIZERS, PRECISIONS, REDUCERS } from '../options'
import type { LossPhaseOptions } from '../training/objective'
import { choicesHelp, crop, EXIT, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, type CommandSpec } from './options'
import { ProgressBar } from './progress'
import { readRegularFile } from '../regular-file'
import { distributedFromEnv } from '../training/distributed'
import { launch, splitNproc } from './launch'

const FLOAT32_MAX = 3.4028234663852886e38

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
 * `facenet train`'s defaults are sized for a laptop CPU, where a first run happens: the
 * `tiny` network on 32×4 batches takes a fraction of a second per step, where the paper's
 * `nn1` on 45×40 batches takes ~40 s and 2.4 GB on 2 cores. The API's defaults stay the
 * paper's; the paper's recipe from the CLI is `--arch nn1 --batch-identities 45 --batch-images 40`.
 */
const CLI_DEFAULTS = { arch: 'tiny', batchIdentities: 32, batchImages: 4, checkpointEvery: 100 } as const

/** What a run's `config.json` holds: the recipe, so `--resume` continues with the same one. */
const recipe = {
  data: z.string().min(1).optional(),
  lfw: z.boolean().optional(),
  arch: z.enum(ARCHS).default(CLI_DEFAULTS.arch),
  embeddingDim: positiveInt.default(128),
  // A flag gives "32,64,128"; config.json keeps the parsed list.
  tinyWidths: z
    .preprocess(
      (value) => (typeof value === 'string' ? value.split(',').map(Number) : value),
      z.array(positiveInt.max(4096)).min(2, 'expected 2 or more channel counts such as 32,64,128,256'),
    )
    .optional(),
  inputSize: positiveInt.max(1024).optional(),
  from: z.string().min(1).optional(),
  freeze: z.preprocess((value) => (typeof value === 'string' ? value.split(',') : value), z.array(z.string().min(1)).min(1)).optional(),
  trainLastBlocks: positiveInt.optional(),
  holdout: z.number().int().min(0).optional(),
  epochs: positiveInt.default(10),
  mining: z.enum(MINING_MODES).default('online'),
  miner: z.enum(MINERS).default('semi-hard'),
  reducer: z.enum(REDUCERS).default('mean'),
  optimizer: z.enum(OPTIMIZERS).default('adagrad'),
  // Rates and coefficients meet float32 weights: beyond float32's range libtorch overflows.
  lr: z.number().positive().max(FLOAT32_MAX).default(0.05),
  momentum: z.number().min(0).max(FLOAT32_MAX).optional(),
  weightDecay: z.number().min(0).max(FLOAT32_MAX).optional(),
  loss: z.enum(LOSSES).default('triplet'),
  // The margin of --loss: α for the triplet loss (0.2 when unset), m for ArcFace and CosFace.
  margin: z.number().min(0).max(FLOAT32_MAX).optional(),
  scale: z.number().positive().max(FLOAT32_MAX).optional(),
  easyMargin: z.boolean().optional(),
  centerWeight: z.number().min(0).max(FLOAT32_MAX).optional(),
  tripletWeight: z.number().min(0).max(FLOAT32_MAX).optional(),
  tripletMargin: z.number().min(0).max(FLOAT32_MAX).optional(),
  tripletFrom: positiveInt.optional(),
  batchSize: z.number().int().min(2).optional(),
  batchIdentities: positiveInt.default(CLI_DEFAULTS.batchIdentities),
  // An anchor and a positive: one image per identity holds no triplet.
  batchImages: z.number().int().min(2).default(CLI_DEFAULTS.batchImages),
  negatives: z.number().int().min(0).optional(),
  tripletsPerBatch: positiveInt.optional(),
  centerCrop: crop.default(1),
  noAugment: z.boolean().default(false),
  cropScale: crop.default(0.875),
  rotation: z.number().min(0).max(45).default(0),
  brightness: z.number().min(0).lt(1).default(0),
  seed: z.number().int().min(0).default(0),
  checkpointEvery: z.number().int().min(0).default(CLI_DEFAULTS.checkpointEvery),
  keepCheckpoints: positiveInt.default(3),
  precision: z.enum(PRECISIONS).default('fp32'),
  skipBadImages: z.boolean().default(false),
  // In the recipe, so that --resume goes on logging where the run logged.
  tensorboard: z.string().min(1).optional(),
}
const RECIPE_KEYS = Object.keys(recipe)

const schema = z.strictObject({
  ...recipe,
  out: z.string().min(1),
  minutes: z.number().positive().optional(),
  maxSteps: positiveInt.optional(),
  resume: z.union([z.boolean(), z.string().min(1)]).optional(),
  overwrite: z.boolean().default(false),
  device: z.string().regex(/^(auto|cpu|cuda(:\d+)?)$/, "expected 'auto', 'cpu', 'cuda' or 'cuda:N'").default('auto'),
  threads: positiveInt.optional(),
  verify: z.boolean().default(false),
})

export const trainSpec: CommandSpec<typeof schema> = {
  name: 'train',
  summary: SUMMARIES.train,
  usage: 'facenet train (--data DIR | --lfw) --out runs/NAME [options]',
  flags: {
    data: { kind: 'string', value: 'DIR', help: 'training images, one folder per identity (DIR/Name/*.jpg)' },
    lfw: { kind: 'boolean', help: 'train on the identities of LFW View 2 folds 1–9 (fold 10 is for eval); a clone\'s data/lfw, or $FACENET_LFW' },
    arch: { kind: 'string', value: 'ARCH', help: `${choicesHelp('network', ARCHS, CLI_DEFAULTS.arch)}; the paper's: nn1 with --batch-identities 45 --batch-images 40` },
    embeddingDim: { kind: 'number', value: 'N', help: 'embedding length (default 128)' },
    tinyWidths: { kind: 'string', value: 'W,W,…', help: "arch 'tiny': channels per stage (default 32,64,128,256)" },
    inputSize: { kind: 'number', value: 'PX', help: "arch 'tiny': input side in pixels (default 64)" },
    from: { kind: 'string', value: 'MODEL', help: `fine-tune MODEL (${PRETRAINED_MODELS.join(', ')}, a .safetensors or a dlib .dat): its arch, input size, preprocessing and alignment are kept` },
    freeze: { kind: 'string', value: 'P,P,…', help: 'with --from: freeze the layers under these name prefixes (see facenet model summary)' },
    trainLastBlocks: { kind: 'number', value: 'N', help: 'with --from: freeze every block but the last N' },
    holdout: { kind: 'number', value: 'N', help: 'with --from: identities held out to choose the stored threshold on (default 10%, at least 2; 0 keeps none and stores no threshold)' },
    epochs: { kind: 'number', value: 'N', help: 'epochs in total, resumed ones included (default 10)' },
    minutes: { kind: 'number', value: 'M', help: 'stop (with a checkpoint) after M minutes of this run' },
    maxSteps: { kind: 'number', value: 'N', help: 'stop (with a checkpoint) at step N in total' },
    mining: { kind: 'string', value: 'MODE', help: `${choicesHelp('triplets from', MINING_MODES, 'online')}; online: mined in each P×K batch, epoch: the notebook's per-epoch list` },
    miner: { kind: 'string', value: 'NAME', help: choicesHelp('online miner', MINERS, 'semi-hard') },
    reducer: { kind: 'string', value: 'NAME', help: `${choicesHelp('loss over the triplets', REDUCERS, 'mean')}; mean-active: over those with a positive loss` },
    optimizer: { kind: 'string', value: 'NAME', help: `${choicesHelp('optimizer', OPTIMIZERS, 'adagrad')}; adagrad is the paper's` },
    lr: { kind: 'number', value: 'X', help: 'learning rate (default 0.05)' },
    momentum: { kind: 'number', value: 'X', help: 'SGD momentum (default 0)' },
    weightDecay: { kind: 'number', value: 'X', help: 'weight decay (default 0)' },
    loss: { kind: 'string', value: 'NAME', help: `${choicesHelp('loss', LOSSES, 'triplet')}; the others train a class-weight matrix over the identities (kept out of model.safetensors)` },
    margin: { kind: 'number', value: 'X', help: 'margin of --loss: triplet α (default 0.2), ArcFace m in radians (0.5), CosFace m (0.4)' },
    scale: { kind: 'number', value: 'S', help: 'ArcFace/CosFace logit scale s (default 64)' },
    easyMargin: { kind: 'boolean', help: "ArcFace: the margin only where cos θ > 0 (default: insightface's cos θ − m·sin m past π − m)" },
    centerWeight: { kind: 'number', value: 'X', help: 'softmax-center: weight λ of the centre loss (default 0.01)' },
    tripletWeight: { kind: 'number', value: 'W', help: 'with a classification --loss: add W × the triplet loss (P×K batches then; default 0)' },
    tripletMargin: { kind: 'number', value: 'X', help: 'triplet margin α beside a classification --loss (default 0.2)' },
    tripletFrom: { kind: 'number', value: 'STEP', help: 'with a classification --loss: train with the triplet loss alone from step STEP on (a warm-up, then triplets)' },
    batchSize: { kind: 'number', value: 'N', help: 'images per batch of a classification --loss without triplets (default 128)' },
    batchIdentities: { kind: 'number', value: 'P', help: `identities per batch (default ${CLI_DEFAULTS.batchIdentities})` },
    batchImages: { kind: 'number', value: 'K', help: `images per identity in a batch (default ${CLI_DEFAULTS.batchImages})` },
    negatives: { kind: 'number', value: 'N', help: 'single-image identities added per batch as negatives (default K)' },
    tripletsPerBatch: { kind: 'number', value: 'N', help: "triplets per step with --mining epoch (default 32)" },
    centerCrop: { kind: 'number', value: 'F', help: 'central fraction of each image kept before resizing (default 1); stored with the model' },
    noAugment: { kind: 'boolean', help: 'no random crop and flip of training images' },
    cropScale: { kind: 'number', value: 'F', help: 'random crop side drawn from [F, 1] of the image (default 0.875; 1: no cropping)' },
    rotation: { kind: 'number', value: 'DEG', help: 'random rotation within ±DEG degrees (default 0: off)' },
    brightness: { kind: 'number', value: 'X', help: 'random brightness factor within 1 ± X (default 0: off)' },
    seed: { kind: 'number', value: 'N', help: 'seed of weights, sampling, augmentation and mining (default 0)' },
    checkpointEvery: { kind: 'number', value: 'N', help: `checkpoint every N steps and at the end of the run (default ${CLI_DEFAULTS.checkpointEvery}; 0: at the end of every epoch)` },
    keepCheckpoints: { kind: 'number', value: 'N', help: 'checkpoints kept (default 3)' },
    out: { kind: 'string', value: 'DIR', help: 'run folder: checkpoints/, train.jsonl, model.safetensors, config.json' },
    tensorboard: { kind: 'string', value: 'DIR', help: 'also log to TensorBoard (tensorboard --logdir DIR): losses, triplets, lr, img/s, histograms, the config' },
    resume: { kind: 'boolean', value: '[CKPT]', help: "continue from CKPT, or from the newest checkpoint in --out; the recipe comes from --out's config.json" },
    overwrite: { kind: 'boolean', help: "start afresh in an --out that already holds a run (deletes its checkpoints and log)" },
    device: { kind: 'string', value: 'DEV', help: "'auto' (default), 'cpu', 'cuda' or 'cuda:N'" },
    threads: { kind: 'number', value: 'N', help: 'libtorch threads (default: the CPU count)' },
    precision: { kind: 'string', value: 'P', help: `${choicesHelp('arithmetic', PRECISIONS, 'fp32')}; bf16: bfloat16 autocast of the forward pass, for CUDA` },
    skipBadImages: { kind: 'boolean', help: 'leave out images that cannot be decoded (each reported), instead of stopping the run' },
    verify: { kind: 'boolean', help: 'decode every image once before training and report every bad one; stop if any (unless --skip-bad-images)' },
  },
  schema,
  notes: [
    'Ctrl-C (SIGINT), SIGTERM and SIGHUP stop after the step in flight, write a checkpoint and',
    "model.safetensors, and exit with 128 + the signal's number (130, 143, 129);",
    "'facenet train --out DIR --resume' continues from there. A second signal quits at once, with the same exit code; the last complete checkpoint stays.",
    'One run at a time per --out: a second one exits with 2, naming the process that holds the folder.',
    '--nproc N trains data-parallel on N local processes (CPU, Gloo); RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun\'s variables) make this process one rank of a run across machines.',
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

/** Trainer and sampler option names → the flags that set them, so messages name what the user typed. */
const FLAG_OF: Record<string, string> = {
  identitiesPerBatch: '--batch-identities',
  imagesPerIdentity: '--batch-images',
  negativesPerBatch: '--negatives',
  tripletsPerBatch: '--triplets-per-batch',
  weightDecay: '--weight-decay',
  keepCheckpoints: '--keep-checkpoints',
  checkpointEvery: '--checkpoint-every',
  centerCrop: '--center-crop',
  lr: '--lr',
  margin: '--margin',
  momentum: '--momentum',
  seed: '--seed',
  P: '--batch-identities',
  K: '--batch-images',
}

function withFlags(message: string): string {
  const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
  return message.replace(/\bloss(?:\[\d+\])?\.([A-Za-z]+)|\b[A-Za-z]+\b/g, (word, lossField?: string) =>
    lossField ? `--${kebab(lossField)}` : Object.hasOwn(FLAG_OF, word) ? FLAG_OF[word]! : word,
  )
}

/**
 * The Trainer's `loss` from the flags, and the triplet margin α. Flags that shape another
 * loss than the one chosen are refused rather than ignored.
 */
function lossOptions(o: z.infer<typeof schema>): { loss: LossPhaseOptions | LossPhaseOptions[]; tripletMargin: number } {
  const only = (flag: string, value: unknown, types: readonly string[]) => {
    if (value !== undefined && !types.includes(o.loss)) throw new UsageError(`${flag} applies to --loss ${types.join(' or ')}, not '${o.loss}'`)
  }
  only('--scale', o.scale, ['arcface', 'cosface'])
  only('--easy-margin', o.easyMargin, ['arcface'])
  only('--center-weight', o.centerWeight, ['softmax-center'])
  const classifying = ['arcface', 'cosface', 'softmax-center']
  only('--triplet-weight', o.tripletWeight, classifying)
  only('--triplet-margin', o.tripletMargin, classifying)
  only('--triplet-from', o.tripletFrom, classifying)
  if (o.loss === 'triplet') return { loss: { type: 'triplet' }, tripletMargin: o.margin ?? 0.2 }
  if (o.loss === 'softmax-center' && o.margin !== undefined) throw new UsageError("--margin applies to --loss triplet, arcface or cosface, not 'softmax-center'")
  const tripletWeight = o.tripletWeight ?? 0
  const first = {
    type: o.loss,
    ...(o.margin !== undefined ? { margin: o.margin } : {}),
    ...(o.scale !== undefined ? { scale: o.scale } : {}),
    ...(o.easyMargin !== undefined ? { easyMargin: o.easyMargin } : {}),
    ...(o.centerWeight !== undefined ? { centerWeight: o.centerWeight } : {}),
    ...(tripletWeight > 0 ? { tripletWeight } : {}),
  } as LossPhaseOptions
  const tripletMargin = o.tripletMargin ?? 0.2
  return { loss: o.tripletFrom !== undefined ? [first, { type: 'triplet', fromStep: o.tripletFrom }] : first, tripletMargin }
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
    const saved = await readJson(join(resolve(peeked), 'config.json'))
    if (saved) base = Object.fromEntries(Object.entries(saved).filter(([k]) => RECIPE_KEYS.includes(k)))
  }
  const parsed = await parseCommand(trainSpec, argv, base)
  if (parsed.help) return printHelp(trainSpec)
  const o = parsed.options
  if (resumePath !== undefined) o.resume = resumePath
  if ((o.data === undefined) === (o.lfw !== true)) throw new UsageError('give exactly one of --data DIR and --lfw')
  if ((o.tinyWidths !== undefined || o.inputSize !== undefined) && o.arch !== 'tiny') throw new UsageError(`--tiny-widths and --input-size shape --arch tiny, not '${o.arch}'`)
  if (o.from !== undefined) {
    const shaping = (['arch', 'embeddingDim', 'tinyWidths', 'inputSize'] as const).filter((k) => argv.some((a) => a === `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`))
    if (shaping.length > 0) throw new UsageError(`--from keeps the source model's shape; drop ${shaping.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`)
  } else if (o.freeze !== undefined || o.trainLastBlocks !== undefined || o.holdout !== undefined) {
    throw new UsageError('--freeze, --train-last-blocks and --holdout shape a fine-tune: give --from MODEL')
  }
  const { loss, tripletMargin } = lossOptions(o)
  if (o.batchIdentities === 1 && o.negatives === 0) {
    throw new UsageError('--batch-identities 1 with --negatives 0 makes batches of one identity, which hold no triplets; raise either')
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
  const skip = o.skipBadImages
  const open = async (root: string) => {
    const found: string[] = []
    const folder = await ImageFolder.open(root, {
      verify: o.verify,
      onBadImage: skip || o.verify ? 'skip' : 'error',
      onWarning: (error) => found.push(error.message),
    })
    if (found.length > 0 && !skip) {
      for (const line of found) process.stderr.write(`bad image: ${line}\n`)
      throw new DataError(root, `${found.length} bad image(s) or folder(s), listed above; fix or remove them, or pass --skip-bad-images`)
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
      const rng = new Rng(o.seed, 0x401d)
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
    embeddingDim: o.embeddingDim,
    seed: o.seed,
    device: o.device as Device,
    ...(o.arch === 'tiny' && (o.tinyWidths || o.inputSize) ? { tiny: { ...(o.tinyWidths ? { widths: o.tinyWidths } : {}), ...(o.inputSize ? { inputSize: o.inputSize } : {}) } } : {}),
    ...(o.threads ? { threads: o.threads } : {}),
  })
  const trainerOptions: TrainerOptions = {
    optimizer: o.optimizer,
    lr: o.lr,
    margin: tripletMargin,
    loss,
    ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
    mining: o.mining,
    miner: o.miner,
    reducer: o.reducer,
    precision: o.precision,
    identitiesPerBatch: o.batchIdentities,
    imagesPerIdentity: o.batchImages,
    centerCrop: o.centerCrop,
    augment: o.noAugment ? false : { cropScale: o.cropScale, maxRotation: o.rotation, brightness: o.brightness },
    seed: o.seed,
    checkpointDir,
    checkpointEvery: o.checkpointEvery,
    keepCheckpoints: o.keepCheckpoints,
    logFile,
    ...(o.tensorboard !== undefined ? { tensorboard: o.tensorboard } : {}),
    onBadImage: skip ? 'skip' : 'error',
    ...(o.momentum !== undefined ? { momentum: o.momentum } : {}),
    ...(o.weightDecay !== undefined ? { weightDecay: o.weightDecay } : {}),
    ...(o.negatives !== undefined ? { negativesPerBatch: o.negatives } : {}),
    ...(o.tripletsPerBatch !== undefined ? { tripletsPerBatch: o.tripletsPerBatch } : {}),
    ...(o.freeze !== undefined ? { freeze: o.freeze } : {}),
    ...(o.trainLastBlocks !== undefined ? { trainLastBlocks: o.trainLastBlocks } : {}),
    ...(distributed ? { distributed } : {}),
  }
  let trainer: Trainer
  let stepsPerEpoch: number | undefined
  try {
    trainer = new Trainer(model, trainerOptions)
    const first = trainer.options.loss[0]!
    stepsPerEpoch =
      o.mining !== 'online'
        ? undefined
        : first.tripletWeight > 0
          ? new PKSampler(folder, { P: o.batchIdentities, K: o.batchImages, negatives: trainer.options.negativesPerBatch, seed: o.seed }).batchesPerEpoch
          : new ShuffleSampler(folder, { batchSize: trainer.options.batchSize, seed: o.seed }).batchesPerEpoch
  } catch (error) {
    if (error instanceof InvalidArgumentError) throw new UsageError(withFlags(error.message))
    throw error
  }
  const startStep = resume ? (checkpointStep(resume) ?? 0) : 0
  const maxSeconds = o.minutes !== undefined ? o.minutes * 60 : undefined
  const progress = new ProgressBar({ epochs: o.epochs, stepsPerEpoch, maxSteps: o.maxSteps, maxSeconds, startStep })
  ui.progress = progress
  say(
    `training ${o.arch} with the ${o.loss} loss${o.tripletWeight ? ` + ${o.tripletWeight} × triplet` : ''}${o.tripletFrom !== undefined ? `, triplet alone from step ${o.tripletFrom}` : ''} on ${folder.length} images of ${folder.identities.length} identities` +
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
    if (error instanceof InvalidArgumentError) throw new UsageError(withFlags(error.message))
    if (error instanceof DataError && !skip && / saved in /.test(error.message)) {
      error.message += `; continue with: facenet train --out ${o.out} --resume (add --skip-bad-images to leave bad images out)`
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
  const metadata: Record<string, string> = { [META.centerCrop]: String(o.centerCrop), steps: String(result.steps) }
  if (o.from !== undefined) {
    metadata.fineTunedFrom = o.from
    if (heldOut) {
      const chosen = await chooseThreshold(model, heldOut, { seed: o.seed, centerCrop: o.centerCrop })
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
