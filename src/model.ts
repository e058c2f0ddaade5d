import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { binding, type BindingModel } from './binding'
import type { Device } from './device'
import { checkImageBatch, integerIn, threadCount } from './check'
import { callBinding, checkKeys, DisposedError, InvalidArgumentError, ShapeError, UnknownArchError } from './errors'
import { THRESHOLD_KEY } from './threshold'
import { ARCHS, DEFAULT_ARCH, NORMALIZATIONS, oneOf, PRECISIONS, type Arch, type Normalization, type Precision } from './options'
import { TRAINING } from './tables/training'

export type { Arch, Normalization, Precision } from './options'

export interface CreateOptions {
  /** Network architecture ({@link ARCHS}). Default `'nn1'` (the notebook's NN1, 220×220 input), as `facenet train`'s. */
  arch?: Arch
  /** Length of the embedding vectors. Default `128`, as in the paper. */
  embeddingDim?: number
  /** `'auto'` (default) uses the first CUDA device when there is one, else the CPU. */
  device?: Device
  /**
   * Seed of the weight initialization. The same seed gives bit-identical weights on any
   * machine. Default `0`, so that runs are reproducible unless asked otherwise.
   */
  seed?: number
  /**
   * `'fixed'` (default): (x − 127.5) / 128. `'prewhiten'`: per image, subtract the mean
   * and divide by the standard deviation. `'dlib'` (the default of `'dlib-resnet-v1'`):
   * (x − channel mean) / 256 with dlib's means (122.782, 117.001, 104.298).
   */
  normalization?: Normalization
  /** libtorch threads for this model's work. Default: the number of CPUs. */
  threads?: number
  /** Width and input size of `arch: 'tiny'` (refused for the other archs). */
  tiny?: TinyOptions
}

/** `tiny`'s shape: a conv stage per width, each but the last ending in a 3×3/2 max pool. */
export interface TinyOptions {
  /** Channels per stage, 2 to 8 stages of 1–4096. Default `[32, 64, 128, 256]`. */
  widths?: readonly number[]
  /** Input side in pixels, or `{ height, width }`; at least 2^stages, at most 1024. Default 64. */
  inputSize?: number | { height: number; width: number }
}

export interface LoadOptions {
  /** `'auto'` (default) uses the first CUDA device when there is one, else the CPU. */
  device?: Device
  /** libtorch threads for this model's work. Default: the number of CPUs. */
  threads?: number
  /**
   * When given, the file must hold this arch, or loading fails with `WeightsError`.
   * Required for a plain state_dict without facenet-torch metadata (a `.pt`/`.pth` from
   * `torch.save`, or one saved with `safetensors.torch.save_file`) unless its tensor names
   * say the arch (facenet-pytorch's InceptionResnetV1 is recognised): the embedding size
   * is then read from the last layer's shape and the normalization is `'fixed'`.
   */
  arch?: Arch
}

/** One layer of a {@link ModelSummary}. */
export interface LayerSummary {
  /** Variable path of the layer, e.g. `'inception_3a.conv3x3'`; tensor names start with it. */
  name: string
  /** What it is, e.g. `'conv 3×3/2 + bn + relu'`, `'l2pool 3×3'`, `'linear'`. */
  kind: string
  /** Output shape for one image: `[C, H, W]` or `[D]`. */
  output: number[]
  /** Trainable parameters (batch-norm scale and shift included). */
  params: number
  /** Multiply-adds per image (convolutions and fully connected layers). */
  multiplyAdds: number
}

/** Size and cost of a network, counted analytically from its layer shapes. */
export interface ModelSummary {
  arch: Arch
  embeddingDim: number
  inputSize: { height: number; width: number }
  /** Trainable parameters. */
  parameters: number
  /** Multiply-adds per image: the paper's "FLOPS". */
  multiplyAdds: number
  layers: LayerSummary[]
}

/**
 * Metadata key of the embedding space a model declares (see {@link FaceNet.embeddingSpace}):
 * written by `save` after harmonic training, so that a v2 names the space of its v1.
 */
export const EMBEDDING_SPACE_KEY = 'embeddingSpace'

/**
 * The embedding space training gave a model: v1's after harmonic training, `null` after any
 * other (its weights moved, so a space it was loaded with no longer holds).
 */
const trainedSpaces = new WeakMap<FaceNet, string | null>()

/**
 * What a save keeps of the metadata a model was loaded with: all of it while the model is
 * untrained (a re-save is a copy), and after training all but the claims training broke,
 * the verification threshold (with its metric and provenance) and the embedding space. Its
 * alignment and preprocessing stay, so a fine-tune embeds as its source did.
 */
function carriedMetadata(loaded: Readonly<Record<string, string>>, trained: boolean): Record<string, string> {
  if (!trained) return { ...loaded }
  return Object.fromEntries(Object.entries(loaded).filter(([key]) => !key.startsWith(THRESHOLD_KEY) && key !== EMBEDDING_SPACE_KEY))
}

/** @internal Called by the trainer before the first step. */
export function declareEmbeddingSpace(model: FaceNet, space: string | null): void {
  trainedSpaces.set(model, space)
}

/** Keys of a weights file's metadata that the library writes itself. */
const RESERVED_METADATA = new Set(['format', 'arch', 'embeddingDim', 'inputHeight', 'inputWidth', 'normalization', 'version', 'libtorch'])

export interface SaveOptions {
  /**
   * String metadata stored in the file's header beside the library's own keys, e.g. a
   * calibrated verification threshold or the preprocessing a model was trained with;
   * {@link FaceNet.metadata} gives it back after {@link FaceNet.load}. Merged over what the
   * model was loaded with: all of it for a model not trained since, and after training all
   * but its threshold keys and its embedding space (claims about the old weights), so a
   * fine-tune keeps its source's alignment. Default: nothing added.
   */
  metadata?: Readonly<Record<string, string>>
}

/** A batch of N images of H×W RGB pixels, channels last (N×H×W×3), values 0..255. */
export interface ImageBatch {
  data: Uint8Array | Float32Array
  /** `[N, H, W, 3]`. */
  shape: readonly [number, number, number, number]
}

export interface EmbedOptions {
  /** Default `'fp32'`. `'bf16'` runs the network under bfloat16 autocast. */
  precision?: Precision
}

export interface ModelInfo {
  arch: Arch
  embeddingDim: number
  /** The input size the network takes; images must be resized to it. */
  inputSize: { height: number; width: number }
  /** The device the weights live on, e.g. `'cpu'` or `'cuda:0'`. */
  device: string
  normalization: Normalization
  parameterCount: number
  /** `tiny`'s channels per stage (only for `arch: 'tiny'`). */
  tinyWidths?: number[]
}

/**
 * A FaceNet embedding network. It maps a face image to a unit vector, so that the squared
 * distance between two embeddings measures how alike the faces are.
 *
 * Work runs on a thread the model owns; the event loop stays free. Call {@link dispose}
 * (or use `using`) to free its memory, which V8 cannot see.
 */
/** The native model behind a {@link FaceNet}, for the library's own modules (the trainer). */
const natives = new WeakMap<FaceNet, BindingModel>()

/** @internal */
export function modelBinding(model: FaceNet): BindingModel {
  const native = natives.get(model)
  if (!native) throw new InvalidArgumentError('not a FaceNet model created by FaceNet.create() or FaceNet.load()')
  return native
}

function tinyShape(arch: Arch, tiny: TinyOptions | undefined): { tinyWidths?: number[]; tinyInputHeight?: number; tinyInputWidth?: number } {
  if (tiny === undefined) return {}
  if (arch !== 'tiny') throw new InvalidArgumentError(`the tiny option shapes arch 'tiny', not '${arch}'`)
  checkKeys('FaceNet.create tiny', tiny, ['widths', 'inputSize'])
  const out: { tinyWidths?: number[]; tinyInputHeight?: number; tinyInputWidth?: number } = {}
  if (tiny.widths !== undefined) {
    if (!Array.isArray(tiny.widths) || tiny.widths.length < 2 || tiny.widths.length > 8) {
      throw new InvalidArgumentError(`tiny.widths must list 2 to 8 channel counts, got ${JSON.stringify(tiny.widths)}`)
    }
    out.tinyWidths = tiny.widths.map((w, i) => integerIn(`tiny.widths[${i}]`, w, 1, 4096))
  }
  if (tiny.inputSize !== undefined) {
    const size = typeof tiny.inputSize === 'number' ? { height: tiny.inputSize, width: tiny.inputSize } : tiny.inputSize
    out.tinyInputHeight = integerIn('tiny.inputSize height', size?.height as number, 1, 1024)
    out.tinyInputWidth = integerIn('tiny.inputSize width', size?.width as number, 1, 1024)
  }
  return out
}

/** Whether an arch's embeddings are unit vectors (all but dlib's raw descriptors). */
export function normalizesEmbeddings(arch: Arch): boolean {
  return arch !== 'dlib-resnet-v1'
}

/** The input scaling an arch is built with when none is given. */
function defaultNormalization(arch: Arch): Normalization {
  return arch === 'dlib-resnet-v1' ? 'dlib' : 'fixed'
}

/** The pretrained models shipped in the package, by name (see {@link FaceNet.pretrained}). */
export const PRETRAINED_MODELS = ['dlib-resnet-v1'] as const
export type PretrainedModel = (typeof PRETRAINED_MODELS)[number]

/** Where the package keeps a pretrained model's weights (safetensors, with its licence beside it). */
export function pretrainedWeights(name: PretrainedModel): string {
  return join(__dirname, '..', 'weights', name, 'model.safetensors')
}

export class FaceNet implements Disposable {
  readonly #binding: BindingModel
  readonly #info: ModelInfo
  readonly #metadata: Readonly<Record<string, string>>

  private constructor(native: BindingModel) {
    this.#binding = native
    natives.set(this, native)
    const info = native.info()
    this.#info = {
      arch: info.arch as Arch,
      embeddingDim: info.embeddingDim,
      inputSize: { height: info.inputHeight, width: info.inputWidth },
      device: info.device,
      normalization: info.normalization as Normalization,
      parameterCount: info.parameterCount,
      ...(info.tinyWidths ? { tinyWidths: [...info.tinyWidths] } : {}),
    }
    this.#metadata = Object.freeze({ ...native.metadata() })
  }

  /** Builds a network with freshly initialized weights. */
  static async create(options: CreateOptions = {}): Promise<FaceNet> {
    checkKeys('FaceNet.create', options, ['arch', 'embeddingDim', 'device', 'seed', 'normalization', 'threads', 'tiny'])
    const embeddingDim = integerIn('embeddingDim', options.embeddingDim ?? 128, 1, 4096)
    const seed = integerIn('seed', options.seed ?? TRAINING.seed.default, 0, Number.MAX_SAFE_INTEGER)
    const threads = threadCount(options.threads, availableParallelism())
    // Checked here: a non-string would otherwise fail in napi's conversion without a code.
    for (const key of ['arch', 'device', 'normalization'] as const) {
      if (options[key] !== undefined && typeof options[key] !== 'string') throw new InvalidArgumentError(`${key} must be a string, got ${String(options[key])}`)
    }
    const arch = oneOf('arch', options.arch ?? DEFAULT_ARCH, ARCHS, UnknownArchError)
    const normalization = oneOf('normalization', options.normalization ?? defaultNormalization(arch), NORMALIZATIONS)
    const tiny = tinyShape(arch, options.tiny)
    const native = await callBinding(() =>
      Promise.resolve().then(() =>
        binding.createModel({
          arch,
          embeddingDim,
          seed,
          device: options.device ?? 'auto',
          normalization,
          threads,
          ...tiny,
        }),
      ),
    )
    return new FaceNet(native)
  }

  /**
   * Restores a model that {@link save} wrote (or any safetensors file with the same tensor
   * names and facenet-torch metadata), a plain state_dict (safetensors, or a PyTorch
   * `.pt`/`.pth` written by `torch.save`, e.g. facenet-pytorch's InceptionResnetV1
   * checkpoints), or a dlib `.dat`. A `.pt` is read without Python by a restricted
   * unpickler that builds only tensors and plain containers, as
   * `torch.load(weights_only=True)` does: nothing in the file is imported or executed.
   * Rejects with `WeightsError` (missing, truncated or corrupt file, another arch, tensors
   * the model lacks) or `ShapeError` (a tensor of the wrong shape); messages name the file
   * and the tensor.
   */
  static async load(path: string, options: LoadOptions = {}): Promise<FaceNet> {
    if (typeof path !== 'string' || path.length === 0) {
      throw new InvalidArgumentError('path must be a non-empty string')
    }
    checkKeys('FaceNet.load', options, ['device', 'threads', 'arch'])
    const threads = threadCount(options.threads, availableParallelism())
    const arch = options.arch === undefined ? undefined : oneOf('arch', options.arch, ARCHS, UnknownArchError)
    const native = await callBinding(() =>
      Promise.resolve().then(() =>
        binding.loadModel({
          path,
          device: options.device ?? 'auto',
          threads,
          ...(arch === undefined ? {} : { arch }),
        }),
      ),
    )
    return new FaceNet(native)
  }

  /**
   * Loads a pretrained model shipped in the package, with no download. `'dlib-resnet-v1'`
   * (the default) is dlib's face-recognition ResNet (public domain; 99.38% on LFW as dlib
   * reports it): 150×150 face chips aligned as dlib aligns them (`alignFaces(..., { mode:
   * 'dlib' })`, or {@link findFaces}), 128-d raw dlib descriptors, and its threshold (dlib's
   * Euclidean 0.6, stored as the squared distance 0.36) in {@link metadata}.
   */
  static async pretrained(name: PretrainedModel = 'dlib-resnet-v1', options: Omit<LoadOptions, 'arch'> = {}): Promise<FaceNet> {
    const known = oneOf('pretrained model', name, PRETRAINED_MODELS)
    checkKeys('FaceNet.pretrained', options, ['device', 'threads'])
    return FaceNet.load(pretrainedWeights(known), options)
  }

  /**
   * Writes the weights (batch-norm running statistics included) to `path` as safetensors,
   * with metadata naming the arch, embeddingDim, input size, normalization and library
   * version, plus `options.metadata`. The file is written under a temporary name and
   * renamed into place, so `path` never holds a partial file.
   */
  async save(path: string, options: SaveOptions = {}): Promise<void> {
    if (this.disposed) throw new DisposedError()
    if (typeof path !== 'string' || path.length === 0) {
      throw new InvalidArgumentError('path must be a non-empty string')
    }
    checkKeys('save', options, ['metadata'])
    const given = options.metadata ?? {}
    for (const [key, value] of Object.entries(given)) {
      if (RESERVED_METADATA.has(key)) throw new InvalidArgumentError(`metadata key '${key}' is reserved for the library's own header`)
      if (typeof value !== 'string') throw new InvalidArgumentError(`metadata '${key}' must be a string, got ${typeof value}`)
    }
    const trained = trainedSpaces.get(this)
    const metadata: Record<string, string> = { ...carriedMetadata(this.#metadata, trained !== undefined), ...given }
    if (typeof trained === 'string' && given[EMBEDDING_SPACE_KEY] === undefined) metadata[EMBEDDING_SPACE_KEY] = trained
    await callBinding(() => this.#binding.save(path, metadata))
  }

  /**
   * The id of the space this model's embeddings live in: embeddings of two models compare
   * (a gallery embedded by one, probes by the other) only when their ids are equal. A model
   * trained with `harmonic: { with: v1 }` takes v1's id (and `save` stores it); any other
   * model's id is `weights:` and the start of the SHA-256 of its weights, so it shares a
   * space only with bit-identical copies of itself.
   */
  async embeddingSpace(): Promise<string> {
    if (this.disposed) throw new DisposedError()
    const trained = trainedSpaces.get(this)
    if (typeof trained === 'string') return trained
    const stored = this.#metadata[EMBEDDING_SPACE_KEY]
    if (trained === undefined && stored) return stored
    const digest = await callBinding(() => this.#binding.weightsDigest())
    return `weights:${digest.slice(0, 16)}`
  }

  /**
   * The extra metadata of the file this model was loaded from (what `save` was given as
   * `options.metadata`); `{}` for a model made by {@link create}.
   */
  get metadata(): Readonly<Record<string, string>> {
    return this.#metadata
  }

  /** Parameter count, multiply-adds per image, input size and the layer table. */
  async summary(): Promise<ModelSummary> {
    if (this.disposed) throw new DisposedError()
    const s = await callBinding(() => this.#binding.summary())
    return {
      arch: s.arch as Arch,
      embeddingDim: s.embeddingDim,
      inputSize: { height: s.inputHeight, width: s.inputWidth },
      parameters: s.parameters,
      multiplyAdds: s.multiplyAdds,
      layers: s.layers.map((row) => ({
        name: row.name,
        kind: row.kind,
        output: row.output,
        params: row.params,
        multiplyAdds: row.macs,
      })),
    }
  }

  get info(): ModelInfo {
    return { ...this.#info, inputSize: { ...this.#info.inputSize } }
  }

  get arch(): Arch {
    return this.#info.arch
  }

  get embeddingDim(): number {
    return this.#info.embeddingDim
  }

  get inputSize(): { height: number; width: number } {
    return { ...this.#info.inputSize }
  }

  get device(): string {
    return this.#info.device
  }

  get disposed(): boolean {
    return this.#binding.disposed
  }

  /**
   * Embeds a batch of images. Pass an {@link ImageBatch}, or a bare array holding whole
   * images of the model's input size (N is then inferred). Returns N×embeddingDim values,
   * row-major; every row has unit L2 norm, except for `'dlib-resnet-v1'`, which returns
   * dlib's raw descriptors (norms near 1.4–1.5) so that they equal dlib's own. `options.precision: 'bf16'` runs the network
   * under bfloat16 autocast (for CUDA); the embeddings are float32 either way.
   *
   * The model's thread reads the pixels where they are, without copying them first, so
   * leave `images.data` unchanged (no writes, no transfer or resize of its ArrayBuffer)
   * until the promise settles, as for a buffer given to `fs.write`. A write made
   * meanwhile may or may not be seen, even partly; once the promise settles the buffer
   * is yours again, and the result does not depend on it.
   */
  async embed(images: ImageBatch | Uint8Array | Float32Array, options: EmbedOptions = {}): Promise<Float32Array> {
    if (this.disposed) throw new DisposedError()
    checkKeys('embed', options, ['precision'])
    const { data, shape } = this.#asBatch(images)
    const [count, height, width] = shape
    const precision = options.precision === undefined ? undefined : oneOf('precision', options.precision, PRECISIONS)
    return callBinding(() => this.#binding.embed(data, count, height, width, precision))
  }

  /**
   * Frees the weights once the call running now returns. Calls still queued, and any
   * call made afterwards, reject with {@link DisposedError}. Safe to call twice.
   */
  dispose(): void {
    this.#binding.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }

  #asBatch(images: ImageBatch | Uint8Array | Float32Array): ImageBatch {
    if (images instanceof Uint8Array || images instanceof Float32Array) {
      const { height, width } = this.#info.inputSize
      const perImage = height * width * 3
      if (images.length === 0 || images.length % perImage !== 0) {
        throw new ShapeError(
          `a bare pixel array must hold whole ${height}×${width}×3 images (${perImage} values each), got ${images.length} values`,
        )
      }
      return { data: images, shape: [images.length / perImage, height, width, 3] }
    }
    return checkImageBatch(images)
  }
}
