/**
 * The trainer's options: their types and defaults, checked once, and converted into the
 * configuration the binding takes.
 */
import type { AugmentOptions } from '../data/preprocess'
import type { FaceNet } from '../model'
import type { OnBadImage } from '../data/source'
import { float32 } from '../check'
import { checkKeys, InvalidArgumentError } from '../errors'
import type { CheckedMineOptions } from '../mining'
import type { BindingTrainOptions } from '../../index'
import type { DistributedOptions, ResolvedDistributed } from './distributed'
import { bindingPhases, classifies, resolveLoss, type LossOptions, type LossPhaseOptions, type ResolvedLossPhase } from './objective'
import { LOSS } from '../tables/loss'
import { MINING } from '../tables/mining'
import { resolveOption } from '../tables/table'
import { defaultEps, prefixList, TRAINING } from '../tables/training'
import {
  quotedList,
  SCHEDULES,
  type DistanceName,
  type Fallback,
  type MinerName,
  type MiningMode,
  type NegativeChoice,
  type OptimizerName,
  type Precision,
  type Reducer,
} from '../options'

export type { OptimizerName } from '../options'

export type Schedule =
  | { type: 'constant' }
  /** Multiply the rate by `gamma` every `every` steps. */
  | { type: 'step'; every: number; gamma?: number }
  /**
   * Cosine decay to `minLr` over `totalSteps`. Default: the steps of the `fit` call, its
   * `maxSteps` or else its `epochs` (epochs cut short at a loss-schedule switch counted as
   * run); with `mining: 'epoch'` give `totalSteps` or `maxSteps`.
   */
  | { type: 'cosine'; totalSteps?: number; minLr?: number }

export interface TrainerOptions {
  /**
   * What training minimizes. Default `{ type: 'triplet' }`, the paper's triplet loss (the
   * options `margin` to `reducer` below shape it). `'arcface'`, `'cosface'` and
   * `'softmax-center'` train a class-weight matrix beside the network (one row per identity
   * of the data; checkpointed with its optimizer state, not part of the exported model), on
   * shuffled batches of `batchSize` over every image; with a `tripletWeight` they add that
   * weight × the triplet loss, and then train on P×K batches. An array is a schedule: each
   * phase from its `fromStep` on (e.g. an ArcFace warm-up, then triplets from step 1000). An
   * epoch ends early where the schedule switches between the two kinds of batch.
   */
  loss?: LossOptions | LossPhaseOptions[]
  /** Images per batch of the classification losses. Default `128`. */
  batchSize?: number
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
  mining?: MiningMode
  /** Online miner. Default `'semi-hard'`. */
  miner?: MinerName
  /** Triplet margin α. Default `0.2`. */
  margin?: number
  /** Semi-hard: which negative among several. Default `'random'`. */
  choice?: NegativeChoice
  /** Semi-hard: pairs without a semi-hard negative. Default `'nearest-farther-else-farthest'`. */
  fallback?: Fallback
  /** Default `'squared-l2'`. */
  distance?: DistanceName
  /** Default `'mean'`. */
  reducer?: Reducer
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
  /**
   * Checkpoint every N steps, and at the end of the run, instead of at the end of every
   * epoch. Default `0`: at the end of each epoch.
   */
  checkpointEvery?: number
  /** Checkpoints kept. Default `3`. */
  keepCheckpoints?: number
  /** JSONL log file, one line per step and per epoch. Default: none. */
  logFile?: string
  /**
   * TensorBoard log directory (`tensorboard --logdir DIR`): an event file per run with the
   * loss and its parts, triplet and learning-rate scalars, img/s, histograms of the embedding
   * norms and the triplets' d(a,p) and d(a,n) at every step, the run's options as text, and with
   * `validation`: its accuracy, VAL@FAR and AUC, its pair distances, its ROC as an image and an
   * embedding-projector export of up to 500 of its images. Default: none.
   */
  tensorboard?: string
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
  /**
   * Fine-tuning: layer-name prefixes to freeze (e.g. `['stem', 'units.0']`; a prefix ends at a
   * `.`, so `'units.1'` does not cover `'units.10'`). Frozen parameters get no gradient and
   * no optimizer state and come out bit-identical; their batch-norm running statistics are
   * held too (the layers still normalise with batch statistics while training). Layer names
   * are those of {@link FaceNet.summary}. Default: none.
   */
  freeze?: readonly string[]
  /**
   * Fine-tuning: freeze every block but the last N. Blocks are the summary's layer names
   * without their last part, in forward order, counting those with parameters (for
   * `'dlib-resnet-v1'`: `stem`, `units.0` … `units.13`, `fc`; so `1` trains only the
   * embedding layer). Combines with `freeze`. Default: train every block.
   */
  trainLastBlocks?: number
  /**
   * Per-group learning rates: parameters under a group's `prefixes` learn at its `lr`
   * instead of `lr` (the schedule and warm-up scale every group alike; the first group that
   * matches wins). E.g. `[{ prefixes: ['units'], lr: 0.001 }]` with `lr: 0.01`.
   */
  lrGroups?: readonly LrGroup[]
  /**
   * Harmonic training (FaceNet §7): `with` is the old model (v1), frozen, which only embeds
   * each batch (the same augmented pixels, in inference mode). Triplets are mined over both
   * models' embeddings of the batch, mixing versions in anchors, positives and negatives, so
   * that the new model's embeddings compare directly with v1's. v1 may be another arch, with
   * the same embedding dimension and input size. Triplet loss only, on an image folder (not
   * a packed dataset).
   */
  harmonic?: HarmonicOptions
  /**
   * Train data-parallel as one rank of a group (Gloo over TCP, CPU tensors): see
   * {@link DistributedOptions} and {@link distributedFromEnv}. Each rank trains on its
   * share of every P×K batch (P/worldSize identities), triplets are mined over the
   * global batch, and gradients are summed across ranks before the same update on every
   * rank. Only rank 0 writes checkpoints, logs and TensorBoard events. Not with
   * `harmonic` or mining `'epoch'`.
   */
  distributed?: DistributedOptions
}

export interface HarmonicOptions {
  with: FaceNet
}

/** Parameters under `prefixes` learn at `lr` (see {@link TrainerOptions.lrGroups}). */
export interface LrGroup {
  prefixes: readonly string[]
  lr: number
}

export const TRAINER_KEYS: readonly (keyof TrainerOptions)[] = [
  'optimizer', 'lr', 'momentum', 'nesterov', 'weightDecay', 'betas', 'eps', 'schedule', 'warmupSteps', 'maxGradNorm',
  'mining', 'miner', 'margin', 'choice', 'fallback', 'distance', 'reducer', 'identitiesPerBatch', 'imagesPerIdentity',
  'negativesPerBatch', 'tripletsPerBatch', 'augment', 'centerCrop', 'seed', 'checkpointDir', 'checkpointEvery',
  'keepCheckpoints', 'logFile', 'tensorboard', 'prefetch', 'precision', 'onBadImage', 'loss', 'batchSize',
  'freeze', 'trainLastBlocks', 'lrGroups', 'harmonic', 'distributed',
]

/** The options with their defaults filled in, as checkpoints record them. */
export type ResolvedOptions = Required<
  Omit<TrainerOptions, 'checkpointDir' | 'logFile' | 'tensorboard' | 'maxGradNorm' | 'schedule' | 'eps' | 'augment' | 'onBadImage' | 'loss' | 'freeze' | 'trainLastBlocks' | 'lrGroups' | 'harmonic' | 'distributed'>
> & {
  freeze: string[]
  /** 0: every block trains. */
  trainLastBlocks: number
  lrGroups: LrGroup[]
  loss: ResolvedLossPhase[]
  schedule: Schedule
  eps: number
  maxGradNorm: number
  augment: AugmentOptions | false
}

export function resolveOptions(options: TrainerOptions): ResolvedOptions {
  checkKeys('Trainer', options, TRAINER_KEYS)
  const training = <K extends keyof typeof TRAINING & keyof TrainerOptions>(key: K) => resolveOption(TRAINING, key, options)
  const mining = <K extends keyof typeof MINING & keyof TrainerOptions>(key: K) => resolveOption(MINING, key, options)
  const optimizer = training('optimizer') as OptimizerName
  const miningMode = mining('mining') as MiningMode
  const imagesPerIdentity = training('imagesPerIdentity')
  const loss = resolveLoss(options.loss)
  // The per-epoch list is semi-hard mining, as in mineTriplets: another miner is refused, not ignored.
  if (miningMode === 'epoch' && options.miner !== undefined && options.miner !== MINING.miner.default) {
    throw new InvalidArgumentError(`mining 'epoch' supports only the semi-hard miner, got miner '${String(options.miner)}'; use mining 'online' for it`)
  }
  if (miningMode === 'epoch' && classifies(loss)) {
    throw new InvalidArgumentError(`mining 'epoch' trains with the triplet loss only; the classification losses (loss type '${loss.find((p) => p.type !== 'triplet')!.type}') need mining 'online'`)
  }
  return {
    loss,
    batchSize: training('batchSize'),
    optimizer,
    lr: training('lr'),
    momentum: training('momentum'),
    nesterov: training('nesterov'),
    weightDecay: training('weightDecay'),
    betas: training('betas'),
    eps: training('eps') ?? defaultEps(optimizer),
    schedule: training('schedule') as Schedule,
    warmupSteps: training('warmupSteps'),
    maxGradNorm: training('maxGradNorm'),
    mining: miningMode,
    miner: mining('miner') as MinerName,
    margin: mining('margin'),
    choice: mining('choice') as NegativeChoice,
    fallback: mining('fallback') as Fallback,
    distance: mining('distance') as DistanceName,
    reducer: resolveOption(LOSS, 'reducer', options) as Reducer,
    identitiesPerBatch: training('identitiesPerBatch'),
    imagesPerIdentity,
    negativesPerBatch: training('negativesPerBatch') ?? imagesPerIdentity,
    tripletsPerBatch: training('tripletsPerBatch'),
    augment: training('augment') as AugmentOptions | false,
    centerCrop: training('centerCrop'),
    seed: training('seed'),
    checkpointEvery: training('checkpointEvery'),
    keepCheckpoints: training('keepCheckpoints'),
    prefetch: training('prefetch'),
    precision: training('precision') as Precision,
    freeze: [...training('freeze')],
    // 0: every block trains.
    trainLastBlocks: training('trainLastBlocks') ?? 0,
    lrGroups: lrGroupList(training('lrGroups')),
  }
}

function lrGroupList(value: unknown): LrGroup[] {
  if (!Array.isArray(value)) throw new InvalidArgumentError(`lrGroups must be an array of { prefixes, lr }, got ${JSON.stringify(value)}`)
  return value.map((group: unknown, i) => {
    checkKeys(`lrGroups[${i}]`, group as object, ['prefixes', 'lr'])
    const { prefixes, lr } = group as LrGroup
    if (prefixes === undefined || prefixes.length === 0) throw new InvalidArgumentError(`lrGroups[${i}].prefixes must list at least one layer-name prefix`)
    if (typeof lr !== 'number' || !(lr > 0) || !Number.isFinite(lr)) throw new InvalidArgumentError(`lrGroups[${i}].lr must be a positive number, got ${String(lr)}`)
    return { prefixes: prefixList(`lrGroups[${i}].prefixes`, prefixes), lr: float32(`lrGroups[${i}].lr`, lr) }
  })
}

/** The cosine schedule's length defaults to the steps `fit` will run. */
function scheduleFields(schedule: Schedule, defaultTotal: number) {
  switch (schedule.type) {
    case 'constant':
      return { schedule: 'constant' as const, stepEvery: 1, gamma: 1, totalSteps: 1, minLr: 0 }
    case 'step':
      return { schedule: 'step' as const, stepEvery: schedule.every, gamma: schedule.gamma ?? 0.1, totalSteps: 1, minLr: 0 }
    case 'cosine':
      return { schedule: 'cosine' as const, stepEvery: 1, gamma: 1, totalSteps: schedule.totalSteps ?? defaultTotal, minLr: schedule.minLr ?? 0 }
    default:
      throw new InvalidArgumentError(`schedule.type must be ${quotedList(SCHEDULES)}, got ${JSON.stringify((schedule as { type: unknown }).type)}`)
  }
}

/**
 * The options as the binding's `configureTraining` takes them; `totalSteps` is the cosine
 * schedule's default length, `classes` the identities of the data (the class head's rows),
 * `recordDistributions` whether steps return their per-example values (for histograms).
 */
export function bindingTrainOptions(o: Readonly<ResolvedOptions>, totalSteps: number, classes: number, recordDistributions = false, distributed?: ResolvedDistributed): BindingTrainOptions {
  const mining: CheckedMineOptions = { miner: o.miner, margin: o.margin, choice: o.choice, fallback: o.fallback, distance: o.distance, seed: o.seed }
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
  return {
    optimizer,
    mining,
    reducer: o.reducer,
    normalize: true,
    seed: o.seed,
    precision: o.precision,
    phases: bindingPhases(o.loss),
    classes,
    recordDistributions,
    freezePrefixes: o.freeze,
    ...(o.trainLastBlocks > 0 ? { trainLastBlocks: o.trainLastBlocks } : {}),
    lrGroups: o.lrGroups.map((g) => ({ prefixes: [...g.prefixes], lr: g.lr })),
    ...(distributed
      ? {
          distributed: {
            masterAddr: distributed.masterAddr,
            masterPort: distributed.masterPort,
            rank: distributed.rank,
            worldSize: distributed.worldSize,
            timeoutMs: Math.round(distributed.timeoutSeconds * 1000),
            ...(distributed.interface !== undefined ? { interface: distributed.interface } : {}),
          },
        }
      : {}),
  }
}
