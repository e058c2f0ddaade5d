import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { type Batch } from '../data/loader'
import { batchLoader, gatheredTrainStep } from '../data/packed-loader'
import { mappedImages } from '../data/npy'
import { PKSampler, ShuffleSampler } from '../data/sampler'
import type { ImageSource, OnBadImage } from '../data/source'
import { nonNegative, positiveInteger } from '../check'
import { BusyError, callBinding, checkKeys, DataError, FaceNetError, InvalidArgumentError, NonFiniteError } from '../errors'
import { embedRows, slices } from '../embed-rows'
import { evaluateVerification, type IndexPair, type VerificationResult } from '../eval/verification'
import type { MiningStats } from '../mining'
import type { FaceNet } from '../model'
import { declareEmbeddingSpace, modelBinding } from '../model'
import { checkpointName, checkState, pruneCheckpoints, readCheckpointHeader, type CheckpointState } from './checkpoints'
import { epochTriplets, type TripletListSampler } from './epoch-triplets'
import { openLog, trimLog } from './log'
import { classIndex, classifies, phaseAt, usesTriplets, type ResolvedLossPhase } from './objective'
import { bindingTrainOptions, resolveOptions, type HarmonicOptions, type ResolvedOptions, type TrainerOptions } from './options'
import { TrainingBoard } from './board'
import { resolveDistributed, type ResolvedDistributed } from './distributed'
import { evenSample, type ProjectorSample } from './tensorboard'
import { resolveOption } from '../tables/table'
import { TRAINING } from '../tables/training'

export type { HarmonicOptions, LrGroup, OptimizerName, Schedule, TrainerOptions } from './options'

/** Pairs to validate on after each epoch, with their images decoded at the model's input size. */
export interface Validation {
  images: { data: Uint8Array; shape: [number, number, number, 3] }
  pairs: readonly IndexPair[] | readonly (readonly IndexPair[])[]
  /** Validate every N epochs. Default `1`. */
  every?: number
  /**
   * The identity of each image, in image order: the labels of the TensorBoard projector's
   * points (with the trainer's `tensorboard` option). Default: each image's index.
   */
  labels?: readonly string[]
}

export interface FitOptions {
  /** Epochs to train. Default `1`. An epoch that a `loss` schedule cuts short (where it switches between P×K and shuffled batches) counts as one. */
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
  /** The step's loss: the classification loss plus `tripletWeight` × the triplet loss, as its phase says. */
  loss: number
  /** The triplet loss before weighting; 0 in a phase without it. */
  tripletLoss: number
  /** The classification loss (ArcFace, CosFace, softmax + centre); 0 in a phase without it. */
  classLoss: number
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
  /** Data-parallel training: the part of `stepMs` spent in collectives (gathering the global batch, summing gradients), waiting for slower ranks included; 0 in one process. */
  communicationMs: number
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
  if (classifies(o.loss) && counts.size < 2) {
    const type = o.loss.find((p) => p.type !== 'triplet')!.type
    throw new DataError(where, `has ${counts.size} ${counts.size === 1 ? 'identity' : 'identities'}; a classification loss ('${type}') needs at least 2 identities, its classes`)
  }
  if (!o.loss.some(usesTriplets)) return
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

/** The v1 of harmonic training, refused before any step where it cannot pair with `model`. */
function checkHarmonic(model: FaceNet, harmonic: HarmonicOptions, o: ResolvedOptions): FaceNet {
  checkKeys('harmonic', harmonic, ['with'])
  const v1 = harmonic.with
  if (v1 === model) throw new InvalidArgumentError('harmonic.with must be the old model (v1), not the model being trained')
  modelBinding(v1)
  if (v1.disposed) throw new InvalidArgumentError('harmonic.with is a disposed model')
  if (v1.embeddingDim !== model.embeddingDim) {
    throw new InvalidArgumentError(`harmonic.with embeds ${v1.embeddingDim}-d vectors (${v1.arch}), the model being trained ${model.embeddingDim}-d: harmonic embeddings need one dimension`)
  }
  const [a, b] = [v1.inputSize, model.inputSize]
  if (a.height !== b.height || a.width !== b.width) {
    throw new InvalidArgumentError(`harmonic.with takes ${a.height}×${a.width} images, the model being trained ${b.height}×${b.width}: v1 embeds the same batch pixels, so their input sizes must match`)
  }
  if (o.mining !== 'online' || o.loss.some((p) => p.type !== 'triplet')) {
    throw new InvalidArgumentError("harmonic training uses the triplet loss with mining 'online' (its triplets mix both models' embeddings of each batch)")
  }
  return v1
}

const COLLAPSE_DISTANCE = 1e-3
const COLLAPSE_PATIENCE = 20

type StepStats = Awaited<ReturnType<ReturnType<typeof modelBinding>['trainStep']>>

/** A step's report from the core's statistics, the batch it trained on and its timing. */
function stepResultOf(stats: StepStats, at: { step: number; epoch: number; batch: number; images: number }, dataWaitMs: number, stepMs: number): StepResult {
  return {
    step: at.step,
    epoch: at.epoch,
    batch: at.batch,
    loss: stats.loss,
    tripletLoss: stats.tripletLoss,
    classLoss: stats.classLoss,
    lr: stats.lr,
    gradNorm: stats.gradNorm,
    images: at.images,
    triplets: stats.mining.triplets,
    activeTriplets: Math.round(stats.mining.activeFraction * stats.mining.triplets),
    activeFraction: stats.mining.activeFraction,
    meanAp: stats.mining.meanAp,
    meanAn: stats.mining.meanAn,
    noSemiHardFraction: stats.mining.noSemiHardFraction,
    meanPairwiseDistance: stats.meanPairwiseDistance,
    imagesPerSecond: (at.images * 1000) / Math.max(1e-3, stepMs + dataWaitMs),
    dataWaitMs,
    stepMs,
    communicationMs: stats.communicationMs,
  }
}

/**
 * Watches for the collapse the paper warns of (f(x) = const): embeddings that all but
 * coincide, or a triplet phase whose updates leave no active triplet, for
 * {@link COLLAPSE_PATIENCE} steps running; says so once per such stretch.
 */
class CollapseWatch {
  #steps = 0

  /** The warning for this step, when it completes a stretch of collapsed steps. */
  observe(step: number, stats: StepStats, tripletPhase: boolean): string | undefined {
    const collapsed = stats.meanPairwiseDistance < COLLAPSE_DISTANCE || (tripletPhase && stats.updated && stats.mining.activeFraction === 0)
    this.#steps = collapsed ? this.#steps + 1 : 0
    if (this.#steps !== COLLAPSE_PATIENCE) return undefined
    return `possible collapse at step ${step}: mean pairwise distance ${stats.meanPairwiseDistance.toExponential(2)}, active triplets ${(100 * stats.mining.activeFraction).toFixed(1)}% for ${COLLAPSE_PATIENCE} steps`
  }
}

/**
 * The steps a fresh `fit` of `epochs` epochs runs, the cosine schedule's default length.
 * An epoch is its sampler's batches, cut short where the loss schedule switches to the other
 * kind of batch, as the run cuts it.
 */
function plannedSteps(epochs: number, o: ResolvedOptions, samplerAt: (step: number) => PKSampler | ShuffleSampler | undefined): number {
  if (o.mining === 'epoch') {
    // Epoch mining's batch count is only known once the epoch's triplets are mined.
    if (o.schedule.type === 'cosine' && o.schedule.totalSteps === undefined) {
      throw new InvalidArgumentError("schedule 'cosine' with mining 'epoch' needs schedule.totalSteps or fit's maxSteps: an epoch's length is known only once its triplets are mined")
    }
    return epochs
  }
  let step = 0
  for (let epoch = 0; epoch < epochs; epoch++) {
    const sampler = samplerAt(step)!
    const switches = o.loss.map((p) => p.fromStep).filter((from) => from > step && samplerAt(from) !== sampler)
    step += Math.min(sampler.batchesPerEpoch, ...switches.map((from) => from - step))
  }
  return step
}

/**
 * Trains a {@link FaceNet} with the triplet loss, a classification loss (ArcFace, CosFace,
 * softmax + centre) or a schedule of them. Steps run on the model's own thread, so
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
  readonly #tensorboard?: string
  readonly #onBadImage: OnBadImage
  /** The frozen v1 of harmonic training. */
  readonly #v1?: FaceNet
  readonly #distributed?: ResolvedDistributed
  #configured = false
  #step = 0

  constructor(model: FaceNet, options: TrainerOptions = {}) {
    this.model = model
    this.options = resolveOptions(options)
    this.#onBadImage = resolveOption(TRAINING, 'onBadImage', options) as OnBadImage
    if (options.harmonic !== undefined) this.#v1 = checkHarmonic(model, options.harmonic, this.options)
    this.#checkpointDir = options.checkpointDir ? resolve(options.checkpointDir) : undefined
    this.#logFile = options.logFile ? resolve(options.logFile) : undefined
    if (options.tensorboard !== undefined && (typeof options.tensorboard !== 'string' || options.tensorboard === '')) {
      throw new InvalidArgumentError(`tensorboard must be a directory path, got ${JSON.stringify(options.tensorboard)}`)
    }
    this.#tensorboard = options.tensorboard ? resolve(options.tensorboard) : undefined
    if (options.distributed !== undefined) {
      const distributed = resolveDistributed(options.distributed)
      if (this.#v1 || this.options.mining === 'epoch') {
        throw new InvalidArgumentError("distributed training mines online over the global batch: it does not combine with harmonic training or mining 'epoch'")
      }
      if (model.device !== 'cpu') {
        throw new InvalidArgumentError(`distributed training runs on the CPU (Gloo) in this version; the model is on ${model.device}`)
      }
      this.#distributed = distributed
      // One writer: the other ranks hold the same weights and the same global statistics.
      if (distributed.rank !== 0) {
        this.#checkpointDir = undefined
        this.#logFile = undefined
        this.#tensorboard = undefined
      }
    }
  }

  /** This rank's place in a data-parallel run, when the trainer was given `distributed`. */
  get distributed(): Readonly<ResolvedDistributed> | undefined {
    return this.#distributed
  }

  /**
   * The batches of one epoch of `data` as {@link fit} runs it from step 0 (P×K batches for
   * the triplet loss, shuffled ones for a classification loss alone); `undefined` with
   * `mining: 'epoch'`, whose epochs are as long as the triplet list each one mines.
   */
  stepsPerEpoch(data: ImageSource): number | undefined {
    return this.#samplers(data)(0)?.batchesPerEpoch
  }

  /**
   * The sampler of each step: triplet phases train on P×K batches, classification-only ones
   * on shuffled batches of every image; both are built once, and each epoch draws from the
   * one its first step needs. None with epoch mining.
   */
  #samplers(data: ImageSource): (step: number) => PKSampler | ShuffleSampler | undefined {
    const o = this.options
    // Each rank of a data-parallel run keeps its share of the one global batch.
    const dist = this.#distributed
    const shard = dist ? { shard: { rank: dist.rank, worldSize: dist.worldSize } } : {}
    const pk =
      o.mining === 'online' && o.loss.some(usesTriplets)
        ? new PKSampler(data, { P: o.identitiesPerBatch, K: o.imagesPerIdentity, negatives: o.negativesPerBatch, seed: o.seed, ...shard })
        : undefined
    const shuffled = o.loss.some((p) => !usesTriplets(p)) ? new ShuffleSampler(data, { batchSize: o.batchSize, seed: o.seed, ...shard }) : undefined
    return (step) => (o.mining === 'online' ? (usesTriplets(phaseAt(o.loss, step)) ? pk : shuffled) : undefined)
  }

  /** Steps completed so far (restored ones included). */
  get step(): number {
    return this.#step
  }

  async #configure(totalSteps: number, classes: number): Promise<void> {
    await callBinding(() => modelBinding(this.model).configureTraining(bindingTrainOptions(this.options, totalSteps, classes, this.#tensorboard !== undefined, this.#distributed)))
    this.#configured = true
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
    const labels = options.validation?.labels
    if (labels !== undefined && (!Array.isArray(labels) || labels.length !== options.validation!.images.shape[0])) {
      throw new InvalidArgumentError(`validation.labels must hold one label per validation image (${options.validation!.images.shape[0]}), got ${Array.isArray(labels) ? labels.length : typeof labels}`)
    }
    if (this.#v1 && mappedImages(data)) {
      throw new InvalidArgumentError('harmonic training reads each batch\'s pixels to embed them with v1: train on an image folder, not a packed dataset')
    }
    // Two runs interleaving their steps on one set of weights would both "succeed" with a
    // model neither of them trained.
    if (training.has(this.model)) throw new BusyError('this model is already training: a fit() or steps() on it has not finished')
    training.add(this.model)
    try {
      // Harmonic training keeps v2 in v1's embedding space; any other training leaves the
      // space the model was loaded with.
      declareEmbeddingSpace(this.model, this.#v1 ? await this.#v1.embeddingSpace() : null)
      return yield* this.#run(data, options, epochs)
    } finally {
      training.delete(this.model)
    }
  }

  async *#run(data: ImageSource, options: FitOptions, epochs: number): AsyncGenerator<StepResult, FitResult> {
    const o = this.options
    const warn = options.onWarning ?? ((message: string) => console.warn(`facenet-torch: ${message}`))
    const size = this.model.inputSize

    const samplerAt = this.#samplers(data)
    const dist = this.#distributed
    const classes = classifies(o.loss) ? classIndex(data.labels) : undefined
    let startEpoch = 0
    let startBatch = 0
    let lastCheckpoint: string | undefined
    if (options.resume) {
      const state = await this.#restore(options.resume, samplerAt, classes?.size ?? 0)
      this.#step = state.step
      startEpoch = state.epoch
      startBatch = state.batch
      lastCheckpoint = resolve(options.resume)
      // Steps after the checkpoint were trained by a run that died; this run trains them
      // again, so their old lines go, or the log would hold them twice.
      if (this.#logFile) await trimLog(this.#logFile, state)
    } else if (!this.#configured) {
      await this.#configure(options.maxSteps ?? plannedSteps(epochs, o, samplerAt), classes?.size ?? 0)
    }
    const { log, board } = await this.#openRecords(data, options, epochs, warn)
    let lastValidation: VerificationResult | undefined
    let stopped: FitResult['stopped'] = 'completed'
    const collapse = new CollapseWatch()
    let checkpointedStep = options.resume ? this.#step : -1
    const started = Date.now()
    let sampler = samplerAt(this.#step)
    const checkpoint = async (position: { epoch: number; batch: number }): Promise<void> => {
      lastCheckpoint = await this.#checkpoint(position, sampler, classes?.size)
      checkpointedStep = this.#step
    }
    const localStopReason = (): FitResult['stopped'] | undefined => {
      if (options.maxSteps !== undefined && this.#step >= options.maxSteps) return 'max-steps'
      if (options.maxSeconds !== undefined && (Date.now() - started) / 1000 >= options.maxSeconds) return 'max-seconds'
      if (options.signal?.aborted) return 'aborted'
      return undefined
    }
    // Data-parallel ranks stop after the same step, or the others would wait in the next
    // step's collectives for one that left: the reason is agreed on (the most pressing
    // rank's: an abort over a time limit over the step limit) before each step.
    const reasons = [undefined, 'max-steps', 'max-seconds', 'aborted'] as const
    const stopReason = async (): Promise<FitResult['stopped'] | undefined> => {
      const local = localStopReason()
      if (!dist) return local
      const agreed = await callBinding(() => modelBinding(this.model).maxAcrossRanks(reasons.indexOf(local as (typeof reasons)[number])))
      return reasons[agreed]
    }
    try {
      for (let epoch = startEpoch; epoch < epochs; epoch++) {
        // Checked before the epoch starts: epoch mining's pass over the data is long.
        const early = await stopReason()
        if (early) {
          stopped = early
          if (this.#checkpointDir && this.#step > 0 && checkpointedStep !== this.#step) await checkpoint({ epoch, batch: epoch === startEpoch ? startBatch : 0 })
          break
        }
        const epochStarted = Date.now()
        let epochLoss = 0
        let epochSteps = 0
        const firstBatch = epoch === startEpoch ? startBatch : 0
        sampler = samplerAt(this.#step)
        const { batchSource, triplets, epochLength } = await this.#epochSource(sampler, data, epoch, firstBatch, warn)
        const loader = batchLoader(data, {
          size,
          device: this.model.device,
          sampler: batchSource,
          augment: o.augment,
          centerCrop: o.centerCrop,
          seed: o.seed,
          prefetch: o.prefetch,
          // A data-parallel rank stops only where the ranks agree to (above).
          signal: dist ? undefined : options.signal,
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
          const reason = await stopReason()
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
          if (classes) batch.labels = batch.labels.map((label) => classes.get(label)!)
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
          const result = stepResultOf(stats, { step: this.#step, epoch, batch: batch.batch, images: batch.shape[0] }, dataWaitMs, stepMs)
          epochLoss += stats.loss
          epochSteps += 1
          const tripletPhase = usesTriplets(phaseAt(o.loss, this.#step - 1))
          const collapsed = collapse.observe(this.#step, stats, tripletPhase)
          if (collapsed) warn(collapsed)
          log?.write(JSON.stringify({ type: 'step', ...result }) + '\n')
          const phase = phaseAt(o.loss, this.#step - 1)
          board?.step({
            step: this.#step,
            stats,
            triplet: tripletPhase,
            classification: phase.type !== 'triplet',
            activeTriplets: result.activeTriplets,
            imagesPerSecond: result.imagesPerSecond,
            dataWaitMs,
          })
          options.onStep?.(result)
          yield result
          // The epoch's last batch ends the epoch now, whatever stops the run next: its
          // checkpoint is then the epoch's end, written once.
          // So does a switch of the loss schedule to the other kind of batch.
          const lastOfEpoch = batch.batch + 1 >= epochLength || samplerAt(this.#step) !== sampler
          if (lastOfEpoch) break
          if (this.#checkpointDir && o.checkpointEvery > 0 && this.#step % o.checkpointEvery === 0) await checkpoint(position)
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
          lastValidation = await this.#validateEpoch(options.validation, board)
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
        // With a step cadence, epoch ends are checkpointed only where the cadence falls on
        // them and at the run's last epoch: a small folder's one-step epochs would otherwise
        // write a checkpoint per step.
        const cadenceDue = o.checkpointEvery === 0 || this.#step % o.checkpointEvery === 0 || epoch + 1 === epochs
        if (this.#checkpointDir && cadenceDue) await checkpoint({ epoch: epoch + 1, batch: 0 })
        if (report) options.onEpoch?.(epochResult)
      }
    } finally {
      log?.close()
      board?.close()
    }
    return { steps: this.#step, epochs, stopped, lastCheckpoint, lastValidation }
  }

  /** The run's JSONL log and TensorBoard writer (each where asked for), the board given the run's config. */
  async #openRecords(data: ImageSource, options: FitOptions, epochs: number, warn: (message: string) => void) {
    const log = this.#logFile ? await openLog(this.#logFile, warn) : undefined
    let board: TrainingBoard | undefined
    try {
      board = this.#tensorboard ? await TrainingBoard.open(this.#tensorboard, this.#step + 1, warn) : undefined
    } catch (error) {
      log?.close()
      throw error
    }
    board?.config(this.#step, {
      model: { arch: this.model.arch, embeddingDim: this.model.embeddingDim, inputSize: this.model.inputSize, device: this.model.device },
      data: { images: data.labels.length, identities: new Set(data.labels).size },
      fit: { epochs, maxSteps: options.maxSteps, maxSeconds: options.maxSeconds, resume: options.resume, validationPairs: options.validation !== undefined },
      trainer: this.options,
    })
    return { log, board }
  }

  /**
   * Where an epoch's batches come from, from `firstBatch` on: its sampler (online mining), or
   * the triplet list epoch mining builds over the whole data first (with each batch's triplets).
   */
  async #epochSource(sampler: PKSampler | ShuffleSampler | undefined, data: ImageSource, epoch: number, firstBatch: number, warn: (message: string) => void) {
    if (sampler) {
      sampler.seek(epoch, firstBatch)
      return { batchSource: sampler as PKSampler | ShuffleSampler | TripletListSampler, triplets: undefined, epochLength: sampler.batchesPerEpoch }
    }
    const list = await epochTriplets(this.model, data, this.options, this.#onBadImage, epoch, warn)
    list.start = firstBatch
    return { batchSource: list, triplets: list.batches.map((b) => b.triplets), epochLength: list.batches.length }
  }

  /** An epoch's validation: verification now, and on the board its figures, ROC and projector sample. */
  async #validateEpoch(validation: Validation, board: TrainingBoard | undefined): Promise<VerificationResult> {
    const embedded = await this.#embedValidation(validation)
    if (board) await board.validation(this.#step, embedded.result, this.#projectorSample(validation, embedded.embeddings))
    return embedded.result
  }

  /** Verification on `validation`'s pairs with the model as it is now. */
  async validate(validation: Validation): Promise<VerificationResult> {
    return (await this.#embedValidation(validation)).result
  }

  async #embedValidation(validation: Validation): Promise<{ result: VerificationResult; embeddings: Float32Array }> {
    const { embeddings } = await embedRows(this.model, slices(validation.images, 64), validation.images.shape[0])
    return { result: evaluateVerification({ embeddings, dim: this.model.embeddingDim }, validation.pairs), embeddings }
  }

  /** Up to 500 validation images spread over the set, with their embeddings, for the projector. */
  #projectorSample(validation: Validation, embeddings: Float32Array): ProjectorSample {
    const [n, height, width] = validation.images.shape
    const dim = this.model.embeddingDim
    const per = height * width * 3
    const picked = evenSample(n)
    const sampled = new Float32Array(picked.length * dim)
    const pixels = new Uint8Array(picked.length * per)
    picked.forEach((image, row) => {
      sampled.set(embeddings.subarray(image * dim, (image + 1) * dim), row * dim)
      pixels.set(validation.images.data.subarray(image * per, (image + 1) * per), row * per)
    })
    return {
      embeddings: sampled,
      dim,
      labels: picked.map((image) => validation.labels?.[image] ?? String(image)),
      images: { data: pixels, shape: [picked.length, height, width, 3] },
      name: 'validation sample, newest validation',
    }
  }

  async #trainStep(batch: Batch, triplets: Int32Array | undefined, lastCheckpoint: string | undefined) {
    try {
      if (this.#v1) {
        const v1 = await this.#v1.embed({ data: batch.pixels, shape: batch.shape })
        return await callBinding(() => modelBinding(this.model).trainStepHarmonic(batch.pixels, batch.labels, batch.shape[0], batch.shape[1], batch.shape[2], v1))
      }
      const gathered = gatheredTrainStep(batch)
      if (gathered) return await callBinding(() => gathered(modelBinding(this.model), triplets))
      return await callBinding(() => modelBinding(this.model).trainStep(batch.pixels, batch.labels, batch.shape[0], batch.shape[1], batch.shape[2], triplets))
    } catch (error) {
      if (error instanceof NonFiniteError) {
        error.checkpoint = lastCheckpoint
        error.message += lastCheckpoint ? `; the last good checkpoint is ${lastCheckpoint}` : '; no checkpoint was written yet'
      }
      throw error
    }
  }

  async #checkpoint(position: { epoch: number; batch: number }, sampler: PKSampler | ShuffleSampler | undefined, classes: number | undefined): Promise<string> {
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
      ...(classes === undefined ? {} : { classes }),
      ...(this.#distributed ? { worldSize: this.#distributed.worldSize } : {}),
      options: this.options,
    }
    const file = join(dir, checkpointName(this.#step))
    await callBinding(() => modelBinding(this.model).saveCheckpoint(file, JSON.stringify(state)))
    await pruneCheckpoints(dir, this.options.keepCheckpoints)
    return file
  }

  async #restore(path: string, samplerAt: (step: number) => { batchesPerEpoch: number } | undefined, classes: number): Promise<CheckpointState> {
    const file = resolve(path)
    // Checked before the weights are loaded, so a refused checkpoint leaves the model as it was.
    const header = await readCheckpointHeader(file)
    if (header.checkpoint !== undefined) {
      const state = checkState(file, header.checkpoint, header.step, samplerAt)
      const savedRanks = state.worldSize ?? 1
      const ranks = this.#distributed?.worldSize ?? 1
      if (savedRanks !== ranks) {
        throw new InvalidArgumentError(
          `${file} was trained on ${savedRanks} rank(s), this run has ${ranks}: resume at the world size it was saved at. ` +
            "(Each rank's share of a batch sets its batch-norm statistics, so another world size would not continue the same run; start a new run from its weights with FaceNet.load to change it.)",
        )
      }
      if (classes > 0 && state.classes !== undefined && state.classes !== classes) {
        throw new InvalidArgumentError(`${file} was trained on ${state.classes} identities (the class head's rows), this data has ${classes}: resume on the data it was trained on`)
      }
      // Another loss would train on with a class head and optimizer state made for the
      // saved one, and the run's log would mix two objectives under one name.
      const saved = state.options?.loss
      if (Array.isArray(saved) && describeLoss(saved) !== describeLoss(this.options.loss)) {
        throw new InvalidArgumentError(
          `${file} was trained with the loss ${describeLoss(saved)}; this trainer's is ${describeLoss(this.options.loss)}. ` +
            'Resume with the loss it was trained with, or start a new run from its weights (FaceNet.load) to train another loss',
        )
      }
    }
    if (!this.#configured) await this.#configure(1, classes)
    const json = await callBinding(() => modelBinding(this.model).loadCheckpoint(file))
    return checkState(file, json, header.step, samplerAt)
  }
}

/** A loss schedule in words, with every setting that shapes it: "arcface (margin 0.5, scale 64)". */
function describeLoss(phases: readonly ResolvedLossPhase[]): string {
  return phases
    .map((p) => {
      const settings = [
        ...(p.type === 'arcface' || p.type === 'cosface' ? [`margin ${p.margin}`, `scale ${p.scale}`, ...(p.easyMargin ? ['easy margin'] : [])] : []),
        ...(p.type === 'softmax-center' ? [`centre weight ${p.centerWeight}`] : []),
        ...(p.type !== 'triplet' && p.tripletWeight > 0 ? [`+ ${p.tripletWeight} × triplet`] : []),
      ]
      return `${p.type}${settings.length ? ` (${settings.join(', ')})` : ''}${p.fromStep > 0 ? ` from step ${p.fromStep}` : ''}`
    })
    .join(', then ')
}

export type { MiningStats }
