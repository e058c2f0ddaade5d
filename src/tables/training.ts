/**
 * The trainer's own options (batches, optimizer, checkpoints, precision, fine-tuning): the
 * table `resolveOptions` fills in and checks from, and `facenet train` makes its flags of.
 * Mining, the loss and augmentation have tables of their own.
 */
import { checkSeed, float32, nonNegative, positiveInteger } from '../check'
import { checkCenterCrop } from '../data/preprocess'
import { InvalidArgumentError } from '../errors'
import { ON_BAD_IMAGE, OPTIMIZERS, PRECISIONS, type OptimizerName, type Precision, type OnBadImage } from '../options'
import { option, optionTable } from './table'

/** A batch size: a step needs 2 images or more. */
function atLeastTwo(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 2) throw new InvalidArgumentError(`${name} must be an integer ≥ 2, got ${String(value)}`)
  return value
}

/** A rate above 0 within float32's range (the core refuses the rest with the same words). */
function positiveRate(name: string, value: number): number {
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) throw new InvalidArgumentError(`${name} must be a positive number, got ${String(value)}`)
  return float32(name, value)
}

const coefficient = (name: string, value: number) => float32(name, nonNegative(name, value))

/** Layer-name prefixes: non-empty strings. */
export function prefixList(name: string, value: readonly string[]): string[] {
  if (!Array.isArray(value) || value.some((p) => typeof p !== 'string' || p.length === 0)) {
    throw new InvalidArgumentError(`${name} must be an array of layer-name prefixes (non-empty strings), got ${JSON.stringify(value)}`)
  }
  return [...value]
}

/** The optimizer's ε when none is given: torch.optim's for each. */
export function defaultEps(optimizer: string): number {
  return optimizer === 'adagrad' ? 1e-10 : 1e-8
}

export const TRAINING = optionTable({
  batchSize: option<number>({ kind: 'number', default: 128, check: atLeastTwo, value: 'N', help: 'images per batch of a classification loss without triplets' }),
  optimizer: option<OptimizerName>({ kind: 'enum', values: OPTIMIZERS, default: 'adagrad', help: "optimizer (adagrad is the paper's)" }),
  lr: option<number>({ kind: 'number', default: 0.05, check: positiveRate, value: 'X', help: "learning rate, the paper's AdaGrad rate by default" }),
  momentum: option<number>({ kind: 'number', default: 0, check: float32, value: 'X', help: 'SGD momentum, in [0, 1)' }),
  nesterov: option<boolean>({ kind: 'boolean', default: false, help: 'SGD with Nesterov momentum' }),
  weightDecay: option<number>({ kind: 'number', default: 0, check: coefficient, value: 'X', help: 'L2 weight decay (decoupled for adamw)' }),
  betas: option<[number, number]>({ kind: 'object', default: [0.9, 0.999], help: 'Adam/AdamW betas', cli: { noFlag: 'an API option only: two numbers' } }),
  eps: option<number>({ kind: 'number', check: float32, defaultText: "1e-10 for adagrad, 1e-8 for adam and adamw (torch.optim's)", value: 'X', help: "the optimizer's ε" }),
  warmupSteps: option<number>({ kind: 'number', default: 0, value: 'N', help: 'linear learning-rate warm-up over the first N steps' }),
  // 0 disables clipping; a negative value would silently disable it too, so it is refused.
  maxGradNorm: option<number>({ kind: 'number', default: 0, check: coefficient, value: 'X', help: 'clip the global gradient norm to X; 0: no clipping' }),
  identitiesPerBatch: option<number>({
    kind: 'number',
    default: 45,
    check: positiveInteger,
    value: 'P',
    help: "identities per P×K batch; the paper's: 45, with 40 images each",
    // A laptop CPU, where a first run happens: see TRAIN_COMMAND's arch.
    cli: { default: 32, aliases: [{ key: 'batchIdentities' }] },
  }),
  imagesPerIdentity: option<number>({
    kind: 'number',
    default: 40,
    // One image per identity gives no anchor-positive pair, so no triplet ever.
    check: (name, value) => {
      if (!Number.isInteger(value) || value < 2) throw new InvalidArgumentError(`${name} must be an integer ≥ 2 (an anchor and a positive), got ${String(value)}`)
      return value
    },
    value: 'K',
    help: 'images per identity in a P×K batch',
    cli: { default: 4, aliases: [{ key: 'batchImages' }] },
  }),
  negativesPerBatch: option<number>({ kind: 'number', defaultText: 'K, the images per identity', value: 'N', help: 'single-image identities added to each batch as negatives', cli: { aliases: [{ key: 'negatives' }] } }),
  tripletsPerBatch: option<number>({ kind: 'number', default: 32, check: positiveInteger, value: 'N', help: 'triplets per step with --mining epoch' }),
  centerCrop: option<number>({ kind: 'number', default: 1, check: (_, value) => checkCenterCrop(value), value: 'F', help: 'central fraction of each image kept before resizing; stored with the model' }),
  seed: option<number>({ kind: 'number', default: 0, check: (name, value) => checkSeed(value, name), value: 'N', help: 'seed of the weights, sampling, augmentation, mining and dropout' }),
  checkpointDir: option<string>({ kind: 'string', help: 'checkpoints folder', cli: { noFlag: "facenet train writes them to --out's checkpoints/" } }),
  checkpointEvery: option<number>({
    kind: 'number',
    default: 0,
    check: (name, value) => {
      if (!Number.isInteger(value) || value < 0) throw new InvalidArgumentError(`${name} must be an integer ≥ 0, got ${String(value)}`)
      return value
    },
    value: 'N',
    help: 'checkpoint every N steps and at the end of the run; 0: at the end of every epoch',
    cli: { default: 100 },
  }),
  keepCheckpoints: option<number>({ kind: 'number', default: 3, check: positiveInteger, value: 'N', help: 'checkpoints kept' }),
  logFile: option<string>({ kind: 'string', help: 'JSONL log, one line per step and per epoch', cli: { noFlag: "facenet train writes --out's train.jsonl" } }),
  tensorboard: option<string>({ kind: 'string', value: 'DIR', help: 'also log to TensorBoard (tensorboard --logdir DIR): losses, triplets, lr, img/s, histograms, the config' }),
  prefetch: option<number>({ kind: 'number', default: 2, check: positiveInteger, value: 'N', help: 'batches decoded ahead' }),
  precision: option<Precision>({ kind: 'enum', values: PRECISIONS, default: 'fp32', help: 'arithmetic of the forward pass (bf16: bfloat16 autocast, for CUDA)' }),
  onBadImage: option<OnBadImage>({
    kind: 'enum',
    values: ON_BAD_IMAGE,
    default: 'error',
    help: 'an image that cannot be decoded: stop the run (error) or leave it out, reported (skip)',
    cli: { aliases: [{ key: 'skipBadImages', means: 'skip' }] },
  }),
  freeze: option<readonly string[]>({ kind: 'list', default: [], check: prefixList, value: 'P,P,…', help: 'fine-tuning: freeze the layers under these name prefixes (see facenet model summary)' }),
  trainLastBlocks: option<number>({ kind: 'number', check: positiveInteger, defaultText: 'every block trains', value: 'N', help: 'fine-tuning: freeze every block but the last N' }),
  schedule: option<object>({ kind: 'object', default: { type: 'constant' }, help: 'learning-rate schedule', cli: { noFlag: 'an API option only: an object' } }),
  augment: option<object | false>({ kind: 'object', default: {}, help: 'augmentation of training images', cli: { noFlag: 'the augmentation flags and --no-augment set it' } }),
  lrGroups: option<readonly object[]>({ kind: 'object', default: [], help: 'per-group learning rates', cli: { noFlag: 'an API option only: a list of objects' } }),
  harmonic: option<object>({ kind: 'object', help: 'harmonic training against an old model', cli: { noFlag: 'an API option only: it takes a loaded model' } }),
})
