/**
 * Every option with a closed set of values, written once. The public types, the checks at
 * the API's boundary, the CLI's zod enums and its help text all derive from these lists;
 * the binding declares the same sets as `#[napi(string_enum)]` enums, and
 * `__test__/options.spec.ts` holds the two sides equal.
 */
import { InvalidArgumentError, quoted } from './errors'

/**
 * Architectures of the model zoo (input size in pixels, height×width):
 * - `'tiny'`: a small batch-normalized CNN for tests and demos (64×64).
 * - `'nn1'`: the notebook's NN1, Zeiler&Fergus with batch norm (220×220).
 * - `'nn1-paper'`: the paper's NN1 (Table 1): maxout fc layers, LRN; 140M parameters (220×220).
 * - `'nn2'`: the paper's Inception NN2 (Table 2), with L2 pooling; 7.5M parameters (224×224).
 * - `'nn3'`: NN2 at 160×160. `'nn4'`: NN2 at 96×96 without top-level 5×5 convs.
 * - `'nns1'`: mini Inception (165×165). `'nns2'`: tiny Inception (140×116).
 * - `'inception-resnet-v1'`: facenet-pytorch's network and tensor names (160×160).
 * - `'iresnet18'`, `'iresnet34'`, `'iresnet50'`: insightface's ArcFace backbones IR-18/34/50 with
 *   its tensor names; 24.0M, 34.1M, 43.6M parameters at 512-d (112×112).
 * - `'dlib-resnet-v1'`: dlib's face-recognition ResNet (150×150, 5.6M parameters), whose
 *   embeddings are dlib's raw descriptors (not unit length); `FaceNet.pretrained()` loads the
 *   shipped weights.
 */
export const ARCHS = ['tiny', 'nn1', 'nn1-paper', 'nn2', 'nn3', 'nn4', 'nns1', 'nns2', 'inception-resnet-v1', 'iresnet18', 'iresnet34', 'iresnet50', 'dlib-resnet-v1'] as const
export type Arch = (typeof ARCHS)[number]
/** The architecture `FaceNet.create` and `facenet train` build when none is named: the notebook's NN1. */
export const DEFAULT_ARCH: Arch = 'nn1'

/** How pixel values are scaled before the network; saved with the model. */
export const NORMALIZATIONS = ['fixed', 'prewhiten', 'dlib'] as const
export type Normalization = (typeof NORMALIZATIONS)[number]

/** Arithmetic of the forward pass: float32, or bfloat16 autocast. */
export const PRECISIONS = ['fp32', 'bf16'] as const
export type Precision = (typeof PRECISIONS)[number]

/** Where triplets come from: each P×K batch (`'online'`, the paper) or a per-epoch list over the whole set (`'epoch'`, the notebook). */
export const MINING_MODES = ['online', 'epoch'] as const
export type MiningMode = (typeof MINING_MODES)[number]

/** Triplet miners; see {@link MineOptions.miner}. */
export const MINERS = ['semi-hard', 'batch-hard', 'batch-all', 'hard', 'random'] as const
export type MinerName = (typeof MINERS)[number]

/** Semi-hard mining: which of several qualifying negatives to take. */
export const NEGATIVE_CHOICES = ['random', 'hardest'] as const
export type NegativeChoice = (typeof NEGATIVE_CHOICES)[number]

/** Semi-hard mining: what a pair without a semi-hard negative gets. */
export const FALLBACKS = ['nearest-farther-else-farthest', 'hardest', 'skip'] as const
export type Fallback = (typeof FALLBACKS)[number]

/** How embeddings are compared. */
export const DISTANCES = ['squared-l2', 'cosine'] as const
export type DistanceName = (typeof DISTANCES)[number]

/** How the per-triplet losses become one: over all triplets, or over those with a positive loss. */
export const REDUCERS = ['mean', 'mean-active'] as const
export type Reducer = (typeof REDUCERS)[number]

/**
 * What training minimizes (the `type` of a {@link LossOptions}): the paper's triplet loss, or a
 * classification loss over a class-weight matrix (ArcFace, CosFace, softmax + centre loss).
 */
export const LOSSES = ['triplet', 'arcface', 'cosface', 'softmax-center'] as const
export type LossType = (typeof LOSSES)[number]

export const OPTIMIZERS = ['sgd', 'adagrad', 'adam', 'adamw'] as const
export type OptimizerName = (typeof OPTIMIZERS)[number]

/** Learning-rate schedules (the `type` of a {@link Schedule}). */
export const SCHEDULES = ['constant', 'step', 'cosine'] as const
export type ScheduleType = (typeof SCHEDULES)[number]

/** How an image is resized to the network's input: keep the aspect ratio and crop the centre (`'cover'`), or stretch (`'fill'`). */
export const FITS = ['cover', 'fill'] as const
export type Fit = (typeof FITS)[number]

/** What a training or aligning run does with an image that cannot be decoded. */
export const ON_BAD_IMAGE = ['error', 'skip'] as const
export type OnBadImage = (typeof ON_BAD_IMAGE)[number]

/** How a face crop is placed: the 5-point similarity warp, a box with a margin, or dlib's face chip. */
export const ALIGN_MODES = ['template', 'margin', 'dlib'] as const
export type AlignMode = (typeof ALIGN_MODES)[number]

/** Which faces of a photo alignment keeps. */
export const FACE_SELECTIONS = ['largest', 'all'] as const
export type FaceSelection = (typeof FACE_SELECTIONS)[number]

/** How `facenet cluster` groups faces. */
export const CLUSTERING_METHODS = ['connected-components', 'average-linkage'] as const
export type ClusteringMethod = (typeof CLUSTERING_METHODS)[number]

/** How the evaluation metrics compare two embeddings: Euclidean distance, or 1 − cosine similarity. */
export const METRICS = ['l2', 'cosine'] as const
export type Metric = (typeof METRICS)[number]

/** `'a', 'b' or 'c'`: a list for messages and help text. */
export function quotedList(values: readonly string[]): string {
  const quoted = values.map((v) => `'${v}'`)
  return quoted.length < 2 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)!}`
}

/**
 * `value`, when it is one of `values`; else an error naming both (`unknown miner 'x';
 * expected …`), an {@link InvalidArgumentError} unless `Error` says otherwise.
 */
export function oneOf<T extends string>(
  name: string,
  value: unknown,
  values: readonly T[],
  ErrorClass: new (message: string) => Error = InvalidArgumentError,
): T {
  if (typeof value === 'string' && (values as readonly string[]).includes(value)) return value as T
  const shown = typeof value !== 'string' ? String(value) : value.length > 60 ? quoted(value, 60) : `'${value}'`
  throw new ErrorClass(`unknown ${name} ${shown}; expected ${quotedList(values)}`)
}
