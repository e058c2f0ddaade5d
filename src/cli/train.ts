import { mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import { ImageFolder } from '../data/image-folder'
import { LfwPairs } from '../data/lfw-pairs'
import { PKSampler } from '../data/sampler'
import type { Device } from '../device'
import { FaceNet } from '../model'
import { latestCheckpoint, Trainer, type TrainerOptions } from '../trainer'
import { META } from './model'
import { ARCHS, crop, EXIT, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, type CommandSpec } from './options'
import { ProgressBar } from './progress'

/** The shipped LFW (`data/lfw`), two levels above this file in both src/ and dist/. */
export const LFW_ROOT = resolve(__dirname, '..', '..', 'data', 'lfw')

/** What a run's `config.json` holds: the recipe, so `--resume` continues with the same one. */
const recipe = {
  data: z.string().min(1).optional(),
  lfw: z.boolean().optional(),
  arch: z.enum(ARCHS).default('nn4'),
  embeddingDim: positiveInt.default(128),
  epochs: positiveInt.default(10),
  mining: z.enum(['online', 'epoch']).default('online'),
  miner: z.enum(['semi-hard', 'batch-hard', 'batch-all', 'hard', 'random']).default('semi-hard'),
  reducer: z.enum(['mean', 'mean-active']).default('mean'),
  optimizer: z.enum(['sgd', 'adagrad', 'adam', 'adamw']).default('adagrad'),
  lr: z.number().positive().default(0.05),
  momentum: z.number().min(0).optional(),
  weightDecay: z.number().min(0).optional(),
  margin: z.number().min(0).default(0.2),
  batchIdentities: positiveInt.default(45),
  batchImages: positiveInt.default(40),
  negatives: z.number().int().min(0).optional(),
  tripletsPerBatch: positiveInt.optional(),
  centerCrop: crop.default(1),
  noAugment: z.boolean().default(false),
  cropScale: crop.default(0.875),
  rotation: z.number().min(0).max(45).default(0),
  brightness: z.number().min(0).lt(1).default(0),
  seed: z.number().int().min(0).default(0),
  checkpointEvery: z.number().int().min(0).default(0),
  keepCheckpoints: positiveInt.default(3),
  precision: z.enum(['fp32', 'bf16']).default('fp32'),
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
})

export const trainSpec: CommandSpec<typeof schema> = {
  name: 'train',
  summary: SUMMARIES.train,
  usage: 'facenet train (--data DIR | --lfw) --out runs/NAME [options]',
  flags: {
    data: { kind: 'string', value: 'DIR', help: 'training images, one folder per identity (DIR/Name/*.jpg)' },
    lfw: { kind: 'boolean', help: 'train on the identities of the shipped LFW View 2 folds 1–9 (fold 10 is for eval)' },
    arch: { kind: 'string', value: 'ARCH', help: `network: ${ARCHS.join(', ')} (default nn4)` },
    embeddingDim: { kind: 'number', value: 'N', help: 'embedding length (default 128)' },
    epochs: { kind: 'number', value: 'N', help: 'epochs in total, resumed ones included (default 10)' },
    minutes: { kind: 'number', value: 'M', help: 'stop (with a checkpoint) after M minutes of this run' },
    maxSteps: { kind: 'number', value: 'N', help: 'stop (with a checkpoint) at step N in total' },
    mining: { kind: 'string', value: 'MODE', help: "'online' (default: triplets mined in each P×K batch) or 'epoch' (the notebook's)" },
    miner: { kind: 'string', value: 'NAME', help: "online miner: semi-hard (default), batch-hard, batch-all, hard, random" },
    reducer: { kind: 'string', value: 'NAME', help: "loss over the triplets: 'mean' (default) or 'mean-active' (over those with a positive loss)" },
    optimizer: { kind: 'string', value: 'NAME', help: 'adagrad (default, the paper), sgd, adam, adamw' },
    lr: { kind: 'number', value: 'X', help: 'learning rate (default 0.05)' },
    momentum: { kind: 'number', value: 'X', help: 'SGD momentum (default 0)' },
    weightDecay: { kind: 'number', value: 'X', help: 'weight decay (default 0)' },
    margin: { kind: 'number', value: 'X', help: 'triplet margin α (default 0.2)' },
    batchIdentities: { kind: 'number', value: 'P', help: 'identities per batch (default 45)' },
    batchImages: { kind: 'number', value: 'K', help: 'images per identity in a batch (default 40)' },
    negatives: { kind: 'number', value: 'N', help: 'single-image identities added per batch as negatives (default K)' },
    tripletsPerBatch: { kind: 'number', value: 'N', help: "triplets per step with --mining epoch (default 32)" },
    centerCrop: { kind: 'number', value: 'F', help: 'central fraction of each image kept before resizing (default 1); stored with the model' },
    noAugment: { kind: 'boolean', help: 'no random crop and flip of training images' },
    cropScale: { kind: 'number', value: 'F', help: 'random crop side drawn from [F, 1] of the image (default 0.875; 1: no cropping)' },
    rotation: { kind: 'number', value: 'DEG', help: 'random rotation within ±DEG degrees (default 0: off)' },
    brightness: { kind: 'number', value: 'X', help: 'random brightness factor within 1 ± X (default 0: off)' },
    seed: { kind: 'number', value: 'N', help: 'seed of weights, sampling, augmentation and mining (default 0)' },
    checkpointEvery: { kind: 'number', value: 'N', help: 'also checkpoint every N steps (default 0: at epoch ends)' },
    keepCheckpoints: { kind: 'number', value: 'N', help: 'checkpoints kept (default 3)' },
    out: { kind: 'string', value: 'DIR', help: 'run folder: checkpoints/, train.jsonl, model.safetensors, config.json' },
    resume: { kind: 'boolean', value: '[CKPT]', help: "continue from CKPT, or from the newest checkpoint in --out; the recipe comes from --out's config.json" },
    overwrite: { kind: 'boolean', help: "start afresh in an --out that already holds a run (deletes its checkpoints and log)" },
    device: { kind: 'string', value: 'DEV', help: "'auto' (default), 'cpu', 'cuda' or 'cuda:N'" },
    threads: { kind: 'number', value: 'N', help: 'libtorch threads (default: the CPU count)' },
    precision: { kind: 'string', value: 'P', help: "'fp32' (default) or 'bf16' (bfloat16 autocast of the forward pass; for CUDA)" },
  },
  schema,
  notes: [
    'Ctrl-C stops after the step in flight, writes a checkpoint and model.safetensors, and exits with 130;',
    "'facenet train --out DIR --resume' continues from there.",
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
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>
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

export async function train(rawArgv: string[]): Promise<number> {
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
  const out = resolve(o.out)
  const checkpointDir = join(out, 'checkpoints')
  const logFile = join(out, 'train.jsonl')
  const modelFile = join(out, 'model.safetensors')

  let resume: string | undefined
  if (o.resume) {
    resume = typeof o.resume === 'string' ? resolve(o.resume) : await latestCheckpoint(checkpointDir)
    if (!resume) throw new UsageError(`--resume: no checkpoint in ${checkpointDir}`)
  } else if (o.overwrite) {
    await rm(checkpointDir, { recursive: true, force: true })
    await rm(logFile, { force: true })
  } else if (await latestCheckpoint(checkpointDir)) {
    throw new UsageError(`${out} already holds a run; pass --resume to continue it or --overwrite to start afresh`)
  }

  let folder: ImageFolder
  if (o.lfw) {
    const lfw = await LfwPairs.parse(join(LFW_ROOT, 'pairs.txt'))
    folder = (await ImageFolder.open(LFW_ROOT)).subset(lfw.unrestrictedSplit(9).trainIdentities)
  } else {
    folder = await ImageFolder.open(resolve(o.data!))
  }

  await mkdir(out, { recursive: true })
  const saved = Object.fromEntries(RECIPE_KEYS.filter((k) => (o as Record<string, unknown>)[k] !== undefined).map((k) => [k, (o as Record<string, unknown>)[k]]))
  if (saved.data !== undefined) saved.data = resolve(String(saved.data))
  await writeFile(join(out, 'config.json'), JSON.stringify(saved, null, 2) + '\n')

  using model = await FaceNet.create({
    arch: o.arch,
    embeddingDim: o.embeddingDim,
    seed: o.seed,
    device: o.device as Device,
    ...(o.threads ? { threads: o.threads } : {}),
  })
  const trainerOptions: TrainerOptions = {
    optimizer: o.optimizer,
    lr: o.lr,
    margin: o.margin,
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
    ...(o.momentum !== undefined ? { momentum: o.momentum } : {}),
    ...(o.weightDecay !== undefined ? { weightDecay: o.weightDecay } : {}),
    ...(o.negatives !== undefined ? { negativesPerBatch: o.negatives } : {}),
    ...(o.tripletsPerBatch !== undefined ? { tripletsPerBatch: o.tripletsPerBatch } : {}),
  }
  const trainer = new Trainer(model, trainerOptions)
  const stepsPerEpoch =
    o.mining === 'online'
      ? new PKSampler(folder, { P: o.batchIdentities, K: o.batchImages, negatives: trainer.options.negativesPerBatch, seed: o.seed }).batchesPerEpoch
      : undefined
  const startStep = resume ? Number(/step-(\d+)\.ckpt$/.exec(resume)?.[1] ?? 0) : 0
  const maxSeconds = o.minutes !== undefined ? o.minutes * 60 : undefined
  const progress = new ProgressBar({ epochs: o.epochs, stepsPerEpoch, maxSteps: o.maxSteps, maxSeconds, startStep })
  const say = (line: string) => (parsed.json ? process.stderr.write(`${line}\n`) : progress.log(line))
  say(
    `training ${o.arch} on ${folder.length} images of ${folder.identities.length} identities` +
      (resume ? `, resuming from ${resume}` : '') +
      ` → ${out}`,
  )

  const controller = new AbortController()
  let interrupts = 0
  const onSigint = () => {
    interrupts += 1
    // A second Ctrl-C means "now": skip the checkpoint.
    if (interrupts > 1) process.exit(EXIT.interrupted)
    progress.log('interrupted: finishing the step in flight and writing a checkpoint (Ctrl-C again to quit now)')
    controller.abort()
  }
  process.on('SIGINT', onSigint)
  const started = Date.now()
  let result
  try {
    result = await trainer.fit(folder, {
      epochs: o.epochs,
      ...(o.maxSteps !== undefined ? { maxSteps: o.maxSteps } : {}),
      ...(maxSeconds !== undefined ? { maxSeconds } : {}),
      signal: controller.signal,
      ...(resume ? { resume } : {}),
      onStep: (s) => progress.step(s),
      onEpoch: (e) => say(`epoch ${e.epoch + 1}/${o.epochs}: ${e.steps} steps, mean loss ${e.meanLoss.toFixed(4)}, ${e.seconds.toFixed(1)} s`),
      onWarning: (message) => say(`warning: ${message}`),
    })
  } finally {
    process.off('SIGINT', onSigint)
    progress.end()
  }
  await model.save(modelFile, { metadata: { [META.centerCrop]: String(o.centerCrop), steps: String(result.steps) } })
  const summary = {
    stopped: result.stopped,
    steps: result.steps,
    seconds: (Date.now() - started) / 1000,
    model: modelFile,
    checkpoint: result.lastCheckpoint ?? null,
    config: join(out, 'config.json'),
    log: logFile,
  }
  if (parsed.json) console.log(JSON.stringify(summary))
  else {
    console.log(`${result.stopped === 'aborted' ? 'interrupted' : 'done'} (${result.stopped}) at step ${result.steps} after ${summary.seconds.toFixed(1)} s`)
    console.log(`model: ${modelFile}`)
    if (result.lastCheckpoint) console.log(`checkpoint: ${result.lastCheckpoint}`)
    if (result.stopped !== 'completed') console.log(`continue with: facenet train --out ${o.out} --resume`)
  }
  return result.stopped === 'aborted' ? EXIT.interrupted : EXIT.ok
}

