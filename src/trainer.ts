import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { BatchLoader, type Batch } from './data/loader'
import { batchLoader, gatheredTrainStep } from './data/packed-loader'
import type { AugmentOptions } from './data/preprocess'
import { Rng } from './data/rng'
import { PKSampler, SequentialSampler, type SampledBatch, type SamplerState } from './data/sampler'
import type { ImageSource, OnBadImage } from './data/source'
import { BusyError, checkKeys, DataError, FaceNetError, fromBindingError, InvalidArgumentError, NonFiniteError, OutputError, WeightsError } from './errors'
import { evaluateVerification, type IndexPair, type VerificationResult } from './eval/verification'
import { mineTriplets, type DistanceName, type MiningStats } from './mining'
import type { FaceNet, Precision } from './model'
import { modelBinding } from './model'
import { isRunning } from './run-lock'

export type OptimizerName = 'sgd' | 'adagrad' | 'adam' | 'adamw'

export type Schedule =
  | { type: 'constant' }
  /** Multiply the rate by `gamma` every `every` steps. */
  | { type: 'step'; every: number; gamma?: number }
  /** Cosine decay to `minLr` over `totalSteps` (default: the steps of the `fit` call). */
  | { type: 'cosine'; totalSteps?: number; minLr?: number }

export interface TrainerOptions {
  /** Default `'adagrad'`, the paper's optimizer. */
  optimizer?: OptimizerName
  /** Learning rate. Default `0.05` (the paper's AdaGrad rate). */
  lr?: number
  /** SGD momentum. Default `0`. */
  momentum?: number
  /** SGD Nesterov momentum. Default `false`. */
  nesterov?: boolean
  /** L2 weight decay (decoupled for AdamW). Default `0`. */
  weightDecay?: number
  /** Adam/AdamW betas. Default `[0.9, 0.999]`. */
  betas?: [number, number]
  /** Default `1e-10` for AdaGrad, `1e-8` for Adam/AdamW (torch.optim's). */
  eps?: number
  /** Learning-rate schedule. Default constant. */
  schedule?: Schedule
  /** Linear warmup steps. Default `0`. */
  warmupSteps?: number
  /** Clip the global gradient norm to this. Default: no clipping. */
  maxGradNorm?: number
  /**
   * `'online'` (default, the paper): mine triplets inside each P×K batch.
   * `'epoch'` (the notebook): embed the whole training set at each epoch start, build the
   * list of every anchor-positive pair with a semi-hard negative, and iterate it.
   */
  mining?: 'online' | 'epoch'
  /** Online miner. Default `'semi-hard'`. */
  miner?: 'semi-hard' | 'batch-hard' | 'batch-all' | 'hard' | 'random'
  /** Triplet margin α. Default `0.2`. */
  margin?: number
  /** Semi-hard: which negative among several. Default `'random'`. */
  choice?: 'random' | 'hardest'
  /** Semi-hard: pairs without a semi-hard negative. Default `'nearest-farther-else-farthest'`. */
  fallback?: 'nearest-farther-else-farthest' | 'hardest' | 'skip'
  /** Default `'squared-l2'`. */
  distance?: DistanceName
  /** Default `'mean'`. */
  reducer?: 'mean' | 'mean-active'
  /** Identities per batch (online mining). Default `45`. */
  identitiesPerBatch?: number
  /** Images per identity (online mining). Default `40`, as in the paper. */
  imagesPerIdentity?: number
  /** Single-image identities added as negatives per batch. Default `imagesPerIdentity`. */
  negativesPerBatch?: number
  /** Triplets per step in `'epoch'` mining. Default `32`. */
  tripletsPerBatch?: number
  /** Augmentation of training images. Default `{}` (random crop and flip); `false` for none. */
  augment?: AugmentOptions | false
  /** Central fraction of each image kept before resizing (a fixed face crop). Default `1`. */
  centerCrop?: number
  /** Seeds sampling, augmentation, mining and dropout. Default `0`. */
  seed?: number
  /** Checkpoints directory. Default: no checkpoints. */
  checkpointDir?: string
  /** Also checkpoint every N steps. Default `0`: only at the end of each epoch. */
  checkpointEvery?: number
  /** Checkpoints kept. Default `3`. */
  keepCheckpoints?: number
  /** JSONL log file, one line per step and per epoch. Default: none. */
  logFile?: string
  /** Batches decoded ahead. Default `2`. */
  prefetch?: number
  /**
   * Arithmetic of the forward pass. `'bf16'` runs it under bfloat16 autocast (as
   * `torch.autocast(dtype=torch.bfloat16)`): convolutions and matrix products in bf16,
   * weights, optimizer state, mining and the loss in float32. Epoch mining's pass over
   * the training set uses it too; validation stays float32. Meant for CUDA (Ampere and
   * newer); it also runs on the CPU. Default `'fp32'`.
   */
  precision?: Precision
  /**
   * A training image that cannot be decoded: `'error'` (default) stops the run with a
   * {@link DataError} naming it (after writing a checkpoint when `checkpointDir` is set);
   * `'skip'` leaves it out of its batch and reports it through `onWarning`.
   */
  onBadImage?: OnBadImage
}

const TRAINER_KEYS: readonly (keyof TrainerOptions)[] = [
  'optimizer', 'lr', 'momentum', 'nesterov', 'weightDecay', 'betas', 'eps', 'schedule', 'warmupSteps', 'maxGradNorm',
  'mining', 'miner', 'margin', 'choice', 'fallback', 'distance', 'reducer', 'identitiesPerBatch', 'imagesPerIdentity',
  'negativesPerBatch', 'tripletsPerBatch', 'augment', 'centerCrop', 'seed', 'checkpointDir', 'checkpointEvery',
  'keepCheckpoints', 'logFile', 'prefetch', 'precision', 'onBadImage',
]

/** Pairs to validate on after each epoch, with their images decoded at the model's input size. */
export interface Validation {
  images: { data: Uint8Array; shape: [number, number, number, 3] }
  pairs: readonly IndexPair[] | readonly (readonly IndexPair[])[]
  /** Validate every N epochs. Default `1`. */
  every?: number
}

export interface FitOptions {
  /** Epochs to train. Default `1`. */
  epochs?: number
  /** Stop after this many steps in total (counting resumed ones). */
  maxSteps?: number
  /** Stop after this many seconds of this call. */
  maxSeconds?: number
  /** Aborting stops after the step in flight and, with a checkpoint dir, writes a checkpoint. */
  signal?: AbortSignal
  onStep?: (step: StepResult) => void
  onEpoch?: (epoch: EpochResult) => void
  /** Called with a warning (e.g. collapse); default `console.warn`. */
  onWarning?: (message: string) => void
  validation?: Validation
  /** Checkpoint file to continue from. */
  resume?: string
}

const FIT_KEYS: readonly (keyof FitOptions)[] = ['epochs', 'maxSteps', 'maxSeconds', 'signal', 'onStep', 'onEpoch', 'onWarning', 'validation', 'resume']


export interface StepResult {
  step: number
  epoch: number
  /** Batch index within the epoch. */
  batch: number
  loss: number
  lr: number
  gradNorm: number
  images: number
  triplets: number
  activeTriplets: number
  activeFraction: number
  meanAp: number
  meanAn: number
  noSemiHardFraction: number
  meanPairwiseDistance: number
  imagesPerSecond: number
  /** Time this step waited for its batch to be decoded. */
  dataWaitMs: number
  stepMs: number
}

export interface EpochResult {
  epoch: number
  steps: number
  meanLoss: number
  seconds: number
  validation?: { accuracy: number; accuracyStd: number; val: number; auc: number; threshold: number }
}

export interface FitResult {
  steps: number
  epochs: number
  /** Why the run ended. */
  stopped: 'completed' | 'max-steps' | 'max-seconds' | 'aborted'
  lastCheckpoint?: string
  lastValidation?: VerificationResult
}

/** What a checkpoint's metadata carries besides the weights and optimizer state. */
interface CheckpointState {
  format: 'facenet-torch-checkpoint'
  version: 1
  step: number
  /** Epoch and next batch of the data order, where training continues. */
  epoch: number
  batch: number
  sampler?: SamplerState
  options: ResolvedOptions
}

type ResolvedOptions = Required<Omit<TrainerOptions, 'checkpointDir' | 'logFile' | 'maxGradNorm' | 'schedule' | 'eps' | 'augment' | 'onBadImage'>> & {
  schedule: Schedule
  eps: number
  maxGradNorm: number
  augment: AugmentOptions | false
}

/** Models with a fit() in progress: a second one on the same weights is refused. */
const training = new WeakSet<FaceNet>()

/**
 * Triplets need an anchor and a positive of one identity and a negative of another: data
 * without them would train "successfully" on zero triplets at every step.
 */
function checkTrainable(data: ImageSource, o: ResolvedOptions): void {
  const root = (data as { root?: unknown }).root
  const where = typeof root === 'string' ? root : 'the training data'
  const counts = new Map<number, number>()
  for (const label of data.labels) counts.set(label, (counts.get(label) ?? 0) + 1)
  const multi = [...counts.values()].filter((n) => n >= 2).length
  if (counts.size < 2 || multi === 0) {
    const has = `${counts.size} ${counts.size === 1 ? 'identity' : 'identities'}, ${multi} of them with 2 or more images`
    throw new DataError(where, `has ${has}; triplet training needs at least 2 identities, one of them with 2 or more images`)
  }
  const singles = counts.size - multi
  if (o.mining === 'online' && o.identitiesPerBatch === 1 && (o.negativesPerBatch === 0 || singles === 0)) {
    throw new InvalidArgumentError(
      `identitiesPerBatch 1 makes batches of one identity, whose only negatives are single-image identities (negativesPerBatch ${o.negativesPerBatch}, ${singles} in the data): no triplets; raise identitiesPerBatch`,
    )
  }
}

const COLLAPSE_DISTANCE = 1e-3
const COLLAPSE_PATIENCE = 20

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be an integer ≥ 1, got ${String(value)}`)
  return value
}

function nonNegative(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a finite number ≥ 0, got ${String(value)}`)
  }
  return value
}

/** The largest float32: rates and coefficients meet float32 weights, and larger ones overflow in libtorch. */
const FLOAT32_MAX = 3.4028234663852886e38

/**
 * A rate or coefficient within float32's range (its other bounds are checked where it is
 * used, natively): a finite but larger value passes as "valid" and then fails deep inside
 * libtorch as "Internal torch error … overflow".
 */
function float32(name: string, value: number): number {
  if (typeof value === 'number' && Math.abs(value) > FLOAT32_MAX && Number.isFinite(value)) {
    throw new InvalidArgumentError(`${name} must be at most ${FLOAT32_MAX.toExponential(2)} (float32's largest), got ${String(value)}`)
  }
  return value
}

function resolveOptions(options: TrainerOptions): ResolvedOptions {
  checkKeys('Trainer', options, TRAINER_KEYS)
  const optimizer = options.optimizer ?? 'adagrad'
  if (!['sgd', 'adagrad', 'adam', 'adamw'].includes(optimizer)) {
    throw new InvalidArgumentError(`optimizer must be 'sgd', 'adagrad', 'adam' or 'adamw', got ${JSON.stringify(optimizer)}`)
  }
  const mining = options.mining ?? 'online'
  if (mining !== 'online' && mining !== 'epoch') throw new InvalidArgumentError(`mining must be 'online' or 'epoch', got ${JSON.stringify(mining)}`)
  const imagesPerIdentity = options.imagesPerIdentity ?? 40
  // One image per identity gives no anchor-positive pair, so no triplet ever.
  if (!Number.isInteger(imagesPerIdentity) || imagesPerIdentity < 2) {
    throw new InvalidArgumentError(`imagesPerIdentity must be an integer ≥ 2 (an anchor and a positive), got ${String(imagesPerIdentity)}`)
  }
  const resolved: ResolvedOptions = {
    optimizer,
    lr: float32('lr', options.lr ?? 0.05),
    momentum: float32('momentum', options.momentum ?? 0),
    nesterov: options.nesterov ?? false,
    weightDecay: float32('weightDecay', nonNegative('weightDecay', options.weightDecay ?? 0)),
    betas: options.betas ?? [0.9, 0.999],
    eps: float32('eps', options.eps ?? (optimizer === 'adagrad' ? 1e-10 : 1e-8)),
    schedule: options.schedule ?? { type: 'constant' },
    warmupSteps: options.warmupSteps ?? 0,
    // 0 disables clipping; a negative value would silently disable it too, so refuse it.
    maxGradNorm: float32('maxGradNorm', nonNegative('maxGradNorm', options.maxGradNorm ?? 0)),
    mining,
    miner: options.miner ?? 'semi-hard',
    margin: float32('margin', nonNegative('margin', options.margin ?? 0.2)),
    choice: options.choice ?? 'random',
    fallback: options.fallback ?? 'nearest-farther-else-farthest',
    distance: options.distance ?? 'squared-l2',
    reducer: options.reducer ?? 'mean',
    identitiesPerBatch: positiveInteger('identitiesPerBatch', options.identitiesPerBatch ?? 45),
    imagesPerIdentity,
    negativesPerBatch: options.negativesPerBatch ?? imagesPerIdentity,
    tripletsPerBatch: positiveInteger('tripletsPerBatch', options.tripletsPerBatch ?? 32),
    augment: options.augment ?? {},
    centerCrop: options.centerCrop ?? 1,
    seed: options.seed ?? 0,
    checkpointEvery: options.checkpointEvery ?? 0,
    keepCheckpoints: positiveInteger('keepCheckpoints', options.keepCheckpoints ?? 3),
    prefetch: positiveInteger('prefetch', options.prefetch ?? 2),
    precision: options.precision ?? 'fp32',
  }
  if (resolved.precision !== 'fp32' && resolved.precision !== 'bf16') {
    throw new InvalidArgumentError(`precision must be 'fp32' or 'bf16', got ${JSON.stringify(resolved.precision)}`)
  }
  if (!Number.isInteger(resolved.seed) || resolved.seed < 0) throw new InvalidArgumentError(`seed must be a non-negative integer, got ${String(resolved.seed)}`)
  if (!Number.isInteger(resolved.checkpointEvery) || resolved.checkpointEvery < 0) {
    throw new InvalidArgumentError(`checkpointEvery must be an integer ≥ 0, got ${String(resolved.checkpointEvery)}`)
  }
  return resolved
}

/** The cosine schedule's length defaults to the steps `fit` will run. */
function scheduleFields(schedule: Schedule, defaultTotal: number) {
  switch (schedule.type) {
    case 'constant':
      return { schedule: 'constant', stepEvery: 1, gamma: 1, totalSteps: 1, minLr: 0 }
    case 'step':
      return { schedule: 'step', stepEvery: schedule.every, gamma: schedule.gamma ?? 0.1, totalSteps: 1, minLr: 0 }
    case 'cosine':
      return { schedule: 'cosine', stepEvery: 1, gamma: 1, totalSteps: schedule.totalSteps ?? defaultTotal, minLr: schedule.minLr ?? 0 }
    default:
      throw new InvalidArgumentError(`schedule.type must be 'constant', 'step' or 'cosine', got ${JSON.stringify((schedule as { type: unknown }).type)}`)
  }
}

/** Serves the batches of an epoch's triplet list (notebook-style mining) to the loader. */
class TripletListSampler {
  readonly batches: { indices: Int32Array; labels: Int32Array; triplets: Int32Array }[]
  readonly epoch: number
  start = 0

  constructor(source: ImageSource, triplets: { anchors: Int32Array; positives: Int32Array; negatives: Int32Array }, perBatch: number, seed: number, epoch: number) {
    this.epoch = epoch
    const order = new Rng(seed, epoch, 0x7219).shuffle(Int32Array.from({ length: triplets.anchors.length }, (_, i) => i))
    this.batches = []
    for (let start = 0; start < order.length; start += perBatch) {
      const chosen = order.subarray(start, start + perBatch)
      const position = new Map<number, number>()
      const indices: number[] = []
      const local = (item: number): number => {
        let at = position.get(item)
        if (at === undefined) {
          at = indices.length
          position.set(item, at)
          indices.push(item)
        }
        return at
      }
      const t = chosen.length
      const flat = new Int32Array(3 * t)
      chosen.forEach((k, j) => {
        flat[j] = local(triplets.anchors[k]!)
        flat[t + j] = local(triplets.positives[k]!)
        flat[2 * t + j] = local(triplets.negatives[k]!)
      })
      const idx = Int32Array.from(indices)
      this.batches.push({ indices: idx, labels: idx.map((i) => source.labels[i]!), triplets: flat })
    }
  }

  *epochBatches(): Generator<SampledBatch> {
    for (let b = this.start; b < this.batches.length; b++) {
      yield { indices: this.batches[b]!.indices, labels: this.batches[b]!.labels, epoch: this.epoch, batch: b }
    }
  }
}

/**
 * Trains a {@link FaceNet} with the triplet loss. Steps run on the model's own thread, so
 * the event loop stays free; data is decoded in parallel ahead of the step that needs it.
 *
 * ```ts
 * const trainer = new Trainer(model, { optimizer: 'adagrad', lr: 0.05 })
 * await trainer.fit(folder, { epochs: 10, onStep: (s) => console.log(s.loss) })
 * ```
 */
export class Trainer {
  readonly model: FaceNet
  readonly options: Readonly<ResolvedOptions>
  readonly #checkpointDir?: string
  readonly #logFile?: string
  readonly #onBadImage: OnBadImage
  #configured = false
  #step = 0

  constructor(model: FaceNet, options: TrainerOptions = {}) {
    this.model = model
    this.options = resolveOptions(options)
    this.#onBadImage = options.onBadImage ?? 'error'
    if (this.#onBadImage !== 'error' && this.#onBadImage !== 'skip') {
      throw new InvalidArgumentError(`onBadImage must be 'error' or 'skip', got ${JSON.stringify(this.#onBadImage)}`)
    }
    this.#checkpointDir = options.checkpointDir ? resolve(options.checkpointDir) : undefined
    this.#logFile = options.logFile ? resolve(options.logFile) : undefined
  }

  /** Steps completed so far (restored ones included). */
  get step(): number {
    return this.#step
  }

  async #configure(totalSteps: number): Promise<void> {
    const o = this.options
    const mining = {
      miner: o.miner,
      margin: o.margin,
      choice: o.choice,
      fallback: o.fallback,
      distance: o.distance,
      seed: o.seed,
      chunk: 1024,
      threads: 1,
    }
    const optimizer = {
      name: o.optimizer,
      lr: o.lr,
      momentum: o.momentum,
      nesterov: o.nesterov,
      weightDecay: o.weightDecay,
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      warmupSteps: o.warmupSteps,
      maxGradNorm: o.maxGradNorm,
      ...scheduleFields(o.schedule, Math.max(1, totalSteps)),
    }
    await this.#call(() => modelBinding(this.model).configureTraining({ optimizer, mining, reducer: o.reducer, normalize: true, seed: o.seed, precision: o.precision }))
    this.#configured = true
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (error) {
      throw fromBindingError(error)
    }
  }

  /**
   * Trains on `data` (an {@link ImageFolder}, {@link NpyDataset} or any image source).
   * Resolves when the epochs are done, `maxSteps` is reached, or `signal` aborts (then
   * with `stopped: 'aborted'`, after writing a checkpoint when `checkpointDir` is set).
   */
  async fit(data: ImageSource, options: FitOptions = {}): Promise<FitResult> {
    let result: FitResult | undefined
    const iterator = this.steps(data, options)
    for (;;) {
      const next = await iterator.next()
      if (next.done) {
        result = next.value
        break
      }
    }
    return result
  }

  /** The same run as {@link fit}, one {@link StepResult} at a time. */
  async *steps(data: ImageSource, options: FitOptions = {}): AsyncGenerator<StepResult, FitResult> {
    checkKeys('fit', options, FIT_KEYS)
    const epochs = options.epochs ?? 1
    positiveInteger('epochs', epochs)
    if (options.maxSteps !== undefined) positiveInteger('maxSteps', options.maxSteps)
    if (options.maxSeconds !== undefined) nonNegative('maxSeconds', options.maxSeconds)
    checkTrainable(data, this.options)
    // Two runs interleaving their steps on one set of weights would both "succeed" with a
    // model neither of them trained.
    if (training.has(this.model)) throw new BusyError('this model is already training: a fit() or steps() on it has not finished')
    training.add(this.model)
    try {
      return yield* this.#run(data, options, epochs)
    } finally {
      training.delete(this.model)
    }
  }

  async *#run(data: ImageSource, options: FitOptions, epochs: number): AsyncGenerator<StepResult, FitResult> {
    const o = this.options
    const warn = options.onWarning ?? ((message: string) => console.warn(`facenet-torch: ${message}`))
    const size = this.model.inputSize

    const sampler =
      o.mining === 'online'
        ? new PKSampler(data, { P: o.identitiesPerBatch, K: o.imagesPerIdentity, negatives: o.negativesPerBatch, seed: o.seed })
        : undefined
    const stepsPerEpoch = sampler?.batchesPerEpoch ?? 0
    let startEpoch = 0
    let startBatch = 0
    let lastCheckpoint: string | undefined
    if (options.resume) {
      const state = await this.#restore(options.resume, sampler)
      this.#step = state.step
      startEpoch = state.epoch
      startBatch = state.batch
      lastCheckpoint = resolve(options.resume)
      // Steps after the checkpoint were trained by a run that died; this run trains them
      // again, so their old lines go, or the log would hold them twice.
      if (this.#logFile) await trimLog(this.#logFile, state)
    } else if (!this.#configured) {
      await this.#configure(options.maxSteps ?? epochs * Math.max(1, stepsPerEpoch))
    }
    const log = this.#logFile ? await openLog(this.#logFile, warn) : undefined
    let lastValidation: VerificationResult | undefined
    let stopped: FitResult['stopped'] = 'completed'
    let collapsedSteps = 0
    let checkpointedStep = options.resume ? this.#step : -1
    const started = Date.now()
    const checkpoint = async (position: { epoch: number; batch: number }): Promise<void> => {
      lastCheckpoint = await this.#checkpoint(position, sampler)
      checkpointedStep = this.#step
    }
    const stopReason = (): FitResult['stopped'] | undefined => {
      if (options.maxSteps !== undefined && this.#step >= options.maxSteps) return 'max-steps'
      if (options.maxSeconds !== undefined && (Date.now() - started) / 1000 >= options.maxSeconds) return 'max-seconds'
      if (options.signal?.aborted) return 'aborted'
      return undefined
    }
    try {
      for (let epoch = startEpoch; epoch < epochs; epoch++) {
        // Checked before the epoch starts: epoch mining's pass over the data is long.
        const early = stopReason()
        if (early) {
          stopped = early
          if (this.#checkpointDir && this.#step > 0 && checkpointedStep !== this.#step) await checkpoint({ epoch, batch: epoch === startEpoch ? startBatch : 0 })
          break
        }
        const epochStarted = Date.now()
        let epochLoss = 0
        let epochSteps = 0
        let triplets: Int32Array[] | undefined
        let batchSource: PKSampler | TripletListSampler
        const firstBatch = epoch === startEpoch ? startBatch : 0
        if (sampler) {
          sampler.restore({ ...sampler.state(), epoch, batch: firstBatch })
          batchSource = sampler
        } else {
          const list = await this.#epochTriplets(data, epoch, warn)
          list.start = firstBatch
          triplets = list.batches.map((b) => b.triplets)
          batchSource = list
        }
        const epochLength = sampler ? sampler.batchesPerEpoch : (batchSource as TripletListSampler).batches.length
        const loader = batchLoader(data, {
          size,
          device: this.model.device,
          sampler: batchSource,
          augment: o.augment,
          centerCrop: o.centerCrop,
          seed: o.seed,
          prefetch: o.prefetch,
          signal: options.signal,
          // Epoch mining's batches index their triplets by position, so a dropped image
          // would shift them; its bad images were left out when the list was mined.
          onBadImage: sampler ? this.#onBadImage : 'error',
          onWarning: (error) => warn(error.message),
        })
        const batches = loader[Symbol.asyncIterator]()
        let position = { epoch, batch: firstBatch }
        // A checkpoint taken after an epoch's last batch (by older versions, which stopped
        // there without ending the epoch) resumes at that epoch's end. Iterating the
        // sampler from there would roll it into the next epoch, trained twice then.
        const epochDone = firstBatch >= epochLength
        for (;;) {
          if (epochDone) break
          const reason = stopReason()
          if (reason) {
            stopped = reason
            break
          }
          const waitStarted = performance.now()
          let next: IteratorResult<Batch>
          try {
            next = await batches.next()
          } catch (error) {
            if (options.signal?.aborted) {
              stopped = 'aborted'
              break
            }
            // A bad image met mid-run: keep the steps trained so far before stopping.
            if (error instanceof DataError && this.#checkpointDir && this.#step > 0) {
              if (checkpointedStep !== this.#step) await checkpoint(position)
              error.message += `; training stopped at step ${this.#step}, saved in ${lastCheckpoint}`
            }
            throw error
          }
          if (next.done) break
          const batch = next.value
          // Bad images skipped can leave a batch too small for any triplet.
          if (batch.shape[0] < 2) {
            warn(`batch ${batch.batch} of epoch ${epoch} kept ${batch.shape[0]} image(s) after skipping bad ones; it is left out`)
            position = { epoch, batch: batch.batch + 1 }
            continue
          }
          const dataWaitMs = performance.now() - waitStarted
          const stepStarted = performance.now()
          const stats = await this.#trainStep(batch, triplets?.[batch.batch], lastCheckpoint)
          const stepMs = performance.now() - stepStarted
          this.#step += 1
          position = { epoch, batch: batch.batch + 1 }
          const result: StepResult = {
            step: this.#step,
            epoch,
            batch: batch.batch,
            loss: stats.loss,
            lr: stats.lr,
            gradNorm: stats.gradNorm,
            images: batch.shape[0],
            triplets: stats.mining.triplets,
            activeTriplets: Math.round(stats.mining.activeFraction * stats.mining.triplets),
            activeFraction: stats.mining.activeFraction,
            meanAp: stats.mining.meanAp,
            meanAn: stats.mining.meanAn,
            noSemiHardFraction: stats.mining.noSemiHardFraction,
            meanPairwiseDistance: stats.meanPairwiseDistance,
            imagesPerSecond: (batch.shape[0] * 1000) / Math.max(1e-3, stepMs + dataWaitMs),
            dataWaitMs,
            stepMs,
          }
          epochLoss += stats.loss
          epochSteps += 1
          collapsedSteps = stats.meanPairwiseDistance < COLLAPSE_DISTANCE || (stats.updated && stats.mining.activeFraction === 0) ? collapsedSteps + 1 : 0
          if (collapsedSteps === COLLAPSE_PATIENCE) {
            warn(
              `possible collapse at step ${this.#step}: mean pairwise distance ${stats.meanPairwiseDistance.toExponential(2)}, active triplets ${(100 * stats.mining.activeFraction).toFixed(1)}% for ${COLLAPSE_PATIENCE} steps`,
            )
          }
          log?.write(JSON.stringify({ type: 'step', ...result }) + '\n')
          options.onStep?.(result)
          yield result
          // The epoch's last batch ends the epoch now, whatever stops the run next: its
          // checkpoint is then the epoch's end, written once.
          const lastOfEpoch = batch.batch + 1 >= epochLength
          if (lastOfEpoch) break
          if (o.checkpointEvery > 0 && this.#step % o.checkpointEvery === 0) await checkpoint(position)
        }
        if (stopped !== 'completed') {
          if (this.#checkpointDir && this.#step > 0 && checkpointedStep !== this.#step) await checkpoint(position)
          break
        }
        const epochResult: EpochResult = {
          epoch,
          steps: epochSteps,
          meanLoss: epochSteps > 0 ? epochLoss / epochSteps : 0,
          seconds: (Date.now() - epochStarted) / 1000,
        }
        const every = options.validation?.every ?? 1
        if (options.validation && (epoch + 1) % every === 0) {
          lastValidation = await this.validate(options.validation)
          epochResult.validation = {
            accuracy: lastValidation.accuracy.mean,
            accuracyStd: lastValidation.accuracy.std,
            val: lastValidation.val.mean,
            auc: lastValidation.auc,
            threshold: lastValidation.threshold,
          }
        }
        // An epoch resumed at its very end trained nothing here; a "0 steps" line would
        // read as an empty epoch.
        const report = epochSteps > 0 || epochResult.validation !== undefined
        // Logged before its checkpoint: a kill in between leaves a line that the resume
        // from the previous checkpoint cuts and writes again, never a missing one.
        if (report) log?.write(JSON.stringify({ type: 'epoch', ...epochResult }) + '\n')
        if (this.#checkpointDir) await checkpoint({ epoch: epoch + 1, batch: 0 })
        if (report) options.onEpoch?.(epochResult)
      }
    } finally {
      log?.close()
    }
    return { steps: this.#step, epochs, stopped, lastCheckpoint, lastValidation }
  }

  /** Verification on `validation`'s pairs with the model as it is now. */
  async validate(validation: Validation): Promise<VerificationResult> {
    const [n, height, width] = validation.images.shape
    const per = height * width * 3
    const dim = this.model.embeddingDim
    const embeddings = new Float32Array(n * dim)
    for (let start = 0; start < n; start += 64) {
      const count = Math.min(64, n - start)
      const data = validation.images.data.subarray(start * per, (start + count) * per)
      embeddings.set(await this.model.embed({ data, shape: [count, height, width, 3] }), start * dim)
    }
    return evaluateVerification({ embeddings, dim }, validation.pairs)
  }

  async #trainStep(batch: Batch, triplets: Int32Array | undefined, lastCheckpoint: string | undefined) {
    try {
      const gathered = gatheredTrainStep(batch)
      if (gathered) return await gathered(modelBinding(this.model), triplets)
      return await modelBinding(this.model).trainStep(batch.pixels, batch.labels, batch.shape[0], batch.shape[1], batch.shape[2], triplets)
    } catch (error) {
      const wrapped = fromBindingError(error)
      if (wrapped instanceof NonFiniteError) {
        wrapped.checkpoint = lastCheckpoint
        wrapped.message += lastCheckpoint ? `; the last good checkpoint is ${lastCheckpoint}` : '; no checkpoint was written yet'
      }
      throw wrapped
    }
  }

  /** Embeds the whole training set and builds the notebook's per-epoch triplet list. */
  async #epochTriplets(data: ImageSource, epoch: number, warn: (message: string) => void): Promise<TripletListSampler> {
    const o = this.options
    const loader = new BatchLoader(data, {
      size: this.model.inputSize,
      sampler: new SequentialSampler(data, 64),
      centerCrop: o.centerCrop,
      prefetch: o.prefetch,
      onBadImage: this.#onBadImage,
      onWarning: (error) => warn(error.message),
    })
    const dim = this.model.embeddingDim
    const embeddings = new Float32Array(data.length * dim)
    const present = new Uint8Array(data.length)
    for await (const batch of loader) {
      const out = await this.model.embed({ data: batch.pixels, shape: batch.shape }, { precision: o.precision })
      batch.indices.forEach((item, row) => {
        embeddings.set(out.subarray(row * dim, (row + 1) * dim), item * dim)
        present[item] = 1
      })
    }
    // Images skipped as bad have no embedding: mine among the others only.
    const kept = present.every((p) => p === 1) ? undefined : Int32Array.from(present.keys()).filter((i) => present[i] === 1)
    const mined = await mineTriplets(kept ? kept.reduce((sub, item, j) => (sub.set(embeddings.subarray(item * dim, (item + 1) * dim), j * dim), sub), new Float32Array(kept.length * dim)) : embeddings, kept ? kept.map((i) => data.labels[i]!) : data.labels, {
      miner: 'epoch',
      margin: o.margin,
      choice: o.choice,
      fallback: o.fallback,
      distance: o.distance,
      seed: o.seed + epoch,
    })
    const triplets = kept ? { anchors: mined.anchors.map((j) => kept[j]!), positives: mined.positives.map((j) => kept[j]!), negatives: mined.negatives.map((j) => kept[j]!) } : mined
    return new TripletListSampler(data, triplets, o.tripletsPerBatch, o.seed, epoch)
  }

  async #checkpoint(position: { epoch: number; batch: number }, sampler: PKSampler | undefined): Promise<string> {
    const dir = this.#checkpointDir
    if (!dir) throw new FaceNetError('ERR_INVALID_ARGUMENT', 'no checkpointDir was set')
    await mkdir(dir, { recursive: true })
    const state: CheckpointState = {
      format: 'facenet-torch-checkpoint',
      version: 1,
      step: this.#step,
      epoch: position.epoch,
      batch: position.batch,
      sampler: sampler ? { ...sampler.state(), epoch: position.epoch, batch: position.batch } : undefined,
      options: this.options,
    }
    const file = join(dir, `step-${String(this.#step).padStart(8, '0')}.ckpt`)
    await this.#call(() => modelBinding(this.model).saveCheckpoint(file, JSON.stringify(state)))
    await pruneCheckpoints(dir, this.options.keepCheckpoints)
    return file
  }

  async #restore(path: string, sampler: PKSampler | undefined): Promise<CheckpointState> {
    const file = resolve(path)
    // Checked before the weights are loaded, so a refused checkpoint leaves the model as it was.
    const header = await readCheckpointHeader(file)
    if (header.checkpoint !== undefined) checkState(file, header.checkpoint, header.step, sampler)
    if (!this.#configured) await this.#configure(1)
    const json = await this.#call(() => modelBinding(this.model).loadCheckpoint(file))
    return checkState(file, json, header.step, sampler)
  }
}

/** The `checkpoint` and `step` metadata of a checkpoint's safetensors header, read without its tensors. */
async function readCheckpointHeader(file: string): Promise<{ checkpoint?: string; step?: string }> {
  let handle
  try {
    handle = await open(file, 'r')
  } catch {
    // Missing or unreadable: the native loader reports it with its coded error.
    return {}
  }
  try {
    const head = Buffer.alloc(8)
    if ((await handle.read(head, 0, 8, 0)).bytesRead < 8) return {}
    const length = Number(head.readBigUInt64LE(0))
    if (length > 100 * 1024 * 1024) return {}
    const text = Buffer.alloc(length)
    if ((await handle.read(text, 0, length, 8)).bytesRead < length) return {}
    const meta = (JSON.parse(text.toString('utf8')) as { __metadata__?: Record<string, unknown> }).__metadata__ ?? {}
    return {
      ...(typeof meta.checkpoint === 'string' ? { checkpoint: meta.checkpoint } : {}),
      ...(typeof meta.step === 'string' ? { step: meta.step } : {}),
    }
  } catch {
    return {}
  } finally {
    await handle.close()
  }
}

const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0

/**
 * A checkpoint's training state, checked: an impossible step, epoch or batch would resume
 * at the wrong place or name checkpoints that retention then sorts wrongly.
 */
function checkState(file: string, json: string, headerStep: string | undefined, sampler: PKSampler | undefined): CheckpointState {
  const bad = (why: string) => new WeightsError(`${file}: the checkpoint's training state ${why}`)
  let state: CheckpointState
  try {
    state = JSON.parse(json) as CheckpointState
  } catch (cause) {
    throw new WeightsError(`${file}: the checkpoint's training state is not valid JSON (${(cause as Error).message})`, { cause })
  }
  if (typeof state !== 'object' || state === null || state.format !== 'facenet-torch-checkpoint') {
    throw new InvalidArgumentError(`${file} is not a facenet-torch training checkpoint`)
  }
  if (state.version !== 1) throw bad(`has version ${JSON.stringify(state.version)}; this library reads version 1`)
  for (const key of ['step', 'epoch', 'batch'] as const) {
    if (!isCount(state[key])) throw bad(`has ${key} ${JSON.stringify(state[key])}, not a count`)
  }
  if (headerStep !== undefined && String(state.step) !== headerStep) throw bad(`says step ${state.step}, its header step ${headerStep}`)
  const named = /step-(\d+)\.ckpt$/.exec(file)?.[1]
  if (named !== undefined && Number(named) !== state.step) throw bad(`says step ${state.step}, but the file is named for step ${Number(named)}`)
  if (state.step === 0 && (state.epoch > 0 || state.batch > 0)) throw bad(`is at epoch ${state.epoch} batch ${state.batch} after 0 steps`)
  if (sampler && state.batch > sampler.batchesPerEpoch) {
    throw bad(`is at batch ${state.batch}, but an epoch of this data has ${sampler.batchesPerEpoch} batches`)
  }
  if (typeof state.options !== 'object' || state.options === null) throw bad('has no options')
  return state
}

/**
 * Cuts `file` back to what the checkpoint `state` had seen: step lines up to its step,
 * epoch lines of the epochs before its epoch. Torn last lines (a kill mid-write) go too.
 * Rewritten under a temporary name and renamed, so a kill now leaves one or the other.
 */
async function trimLog(file: string, state: CheckpointState): Promise<void> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    throw new OutputError(file, `cannot be read to resume its log (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error })
  }
  const keep = text.split('\n').filter((line) => {
    let row: { type?: unknown; step?: unknown; epoch?: unknown }
    try {
      row = JSON.parse(line) as typeof row
    } catch {
      return false
    }
    if (row.type === 'step') return typeof row.step === 'number' && row.step <= state.step
    if (row.type === 'epoch') return typeof row.epoch === 'number' && row.epoch < state.epoch
    return true
  })
  const trimmed = keep.map((line) => line + '\n').join('')
  if (trimmed === text) return
  const temp = `${file}.${process.pid}.tmp`
  try {
    await writeFile(temp, trimmed)
    await rename(temp, file)
  } catch (error) {
    await rm(temp, { force: true })
    throw new OutputError(file, `cannot be rewritten to resume its log (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error })
  }
}

/** An open training log: one line per call, on disk when the call returns. */
interface Log {
  write(line: string): void
  close(): void
}

/**
 * The training log, appended to synchronously: a line written is on disk before the step's
 * checkpoint is, so a kill can never leave a checkpoint ahead of its log. The log is a
 * record, not the run: if it cannot be written (a full disk), that is reported once and
 * training goes on; checkpoints keep the progress.
 */
async function openLog(file: string, warn: (message: string) => void): Promise<Log> {
  const problem = (error: unknown) => (error as NodeJS.ErrnoException).code ?? (error as Error).message
  let fd: number
  try {
    await mkdir(resolve(file, '..'), { recursive: true })
    fd = openSync(file, 'a')
  } catch (cause) {
    throw new OutputError(file, `cannot be opened for writing (${problem(cause)})`, { cause })
  }
  let failed = false
  return {
    write(line) {
      if (failed) return
      try {
        writeSync(fd, line)
      } catch (cause) {
        failed = true
        warn(`${file}: the training log cannot be written (${problem(cause)}); training goes on without it`)
      }
    },
    close() {
      closeSync(fd)
    },
  }
}

/**
 * Keeps the newest `keep` checkpoints of `dir`; names sort by step. Also deletes the
 * temporary files of writes that a killed process left behind (`.step-N.ckpt.tmp-PID-…`,
 * never picked as checkpoints), once their writer is no longer running.
 */
export async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const entries = await readdir(dir)
  const files = entries.filter((f) => /^step-\d+\.ckpt$/.test(f)).sort()
  for (const old of files.slice(0, Math.max(0, files.length - keep))) {
    await rm(join(dir, old), { force: true })
  }
  for (const name of entries) {
    const writer = /^\.step-\d+\.ckpt\.tmp-(\d+)-\d+$/.exec(name)?.[1]
    if (writer !== undefined && Number(writer) !== process.pid && !isRunning(Number(writer))) {
      await rm(join(dir, name), { force: true })
    }
  }
}


/** The newest complete checkpoint in `dir`, or `undefined`. */
export async function latestCheckpoint(dir: string): Promise<string | undefined> {
  let files: string[]
  try {
    files = (await readdir(dir)).filter((f) => /^step-\d+\.ckpt$/.test(f)).sort()
  } catch {
    return undefined
  }
  const newest = files.at(-1)
  return newest ? join(resolve(dir), newest) : undefined
}

export type { MiningStats }
