/**
 * Every option with a closed set of values, written once. The public types, the checks at
 * the API's boundary, the CLI's zod enums and its help text all derive from these lists.
 *
 * The lists that cross into the binding are its `#[napi(string_enum)]` enums
 * (`crates/facenet-node/src/options.rs`): napi writes each into `index.d.ts` as a union, and
 * `scripts/binding-enums.mjs` (run by every build) turns those unions into
 * `./binding-enums`, which this module re-exports under the public names. To add a value,
 * add it to the Rust enum and rebuild. The lists the binding never sees (mining modes, bad-image
 * policy, face selection, clustering, metrics) are written here.
 */
import {
  BINDING_ALIGN_MODE,
  BINDING_ARCH,
  BINDING_DISTANCE,
  BINDING_FALLBACK,
  BINDING_FIT,
  BINDING_LOSS_KIND,
  BINDING_MINER,
  BINDING_NEGATIVE_CHOICE,
  BINDING_NORMALIZATION,
  BINDING_OPTIMIZER,
  BINDING_PRECISION,
  BINDING_REDUCER,
  BINDING_SCHEDULE,
} from './binding-enums'
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
export const ARCHS = BINDING_ARCH
export type Arch = (typeof ARCHS)[number]
/**
 * The architecture `FaceNet.create` builds when none is named: the notebook's NN1. (`facenet train`
 * builds `'tiny'` unless `--arch` says otherwise: its defaults are sized for a first run on a CPU.)
 */
export const DEFAULT_ARCH: Arch = 'nn1'

/** How pixel values are scaled before the network; saved with the model. */
export const NORMALIZATIONS = BINDING_NORMALIZATION
export type Normalization = (typeof NORMALIZATIONS)[number]

/** Arithmetic of the forward pass: float32, or bfloat16 autocast. */
export const PRECISIONS = BINDING_PRECISION
export type Precision = (typeof PRECISIONS)[number]

/** Where triplets come from: each P×K batch (`'online'`, the paper) or a per-epoch list over the whole set (`'epoch'`, the notebook). */
export const MINING_MODES = ['online', 'epoch'] as const
export type MiningMode = (typeof MINING_MODES)[number]

/** Triplet miners; see {@link MineOptions.miner}. */
export const MINERS = BINDING_MINER
export type MinerName = (typeof MINERS)[number]

/** Semi-hard mining: which of several qualifying negatives to take. */
export const NEGATIVE_CHOICES = BINDING_NEGATIVE_CHOICE
export type NegativeChoice = (typeof NEGATIVE_CHOICES)[number]

/** Semi-hard mining: what a pair without a semi-hard negative gets. */
export const FALLBACKS = BINDING_FALLBACK
export type Fallback = (typeof FALLBACKS)[number]

/** How embeddings are compared. */
export const DISTANCES = BINDING_DISTANCE
export type DistanceName = (typeof DISTANCES)[number]

/** How the per-triplet losses become one: over all triplets, or over those with a positive loss. */
export const REDUCERS = BINDING_REDUCER
export type Reducer = (typeof REDUCERS)[number]

/**
 * What training minimizes (the `type` of a {@link LossOptions}): the paper's triplet loss, or a
 * classification loss over a class-weight matrix (ArcFace, CosFace, softmax + centre loss).
 */
export const LOSSES = BINDING_LOSS_KIND
export type LossType = (typeof LOSSES)[number]

/** The optimizers the Trainer steps with (`--optimizer`). */
export const OPTIMIZERS = BINDING_OPTIMIZER
export type OptimizerName = (typeof OPTIMIZERS)[number]

/** Learning-rate schedules (the `type` of a {@link Schedule}). */
export const SCHEDULES = BINDING_SCHEDULE
export type ScheduleType = (typeof SCHEDULES)[number]

/** How an image is resized to the network's input: keep the aspect ratio and crop the centre (`'cover'`), or stretch (`'fill'`). */
export const FITS = BINDING_FIT
export type Fit = (typeof FITS)[number]

/** What a training or aligning run does with an image that cannot be decoded. */
export const ON_BAD_IMAGE = ['error', 'skip'] as const
export type OnBadImage = (typeof ON_BAD_IMAGE)[number]

/** How a face crop is placed: the 5-point similarity warp, a box with a margin, or dlib's face chip. */
export const ALIGN_MODES = BINDING_ALIGN_MODE
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
