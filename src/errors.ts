/**
 * Every error the library throws or rejects with is a {@link FaceNetError}: an `Error`
 * with a stable `code` to branch on, and a message that names the offending value.
 */

export type FaceNetErrorCode =
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_SHAPE'
  | 'ERR_BUSY'
  | 'ERR_OUTPUT'
  | 'ERR_UNKNOWN_ARCH'
  | 'ERR_DEVICE_UNAVAILABLE'
  | 'ERR_DISPOSED'
  | 'ERR_TORCH'
  | 'ERR_WEIGHTS'
  | 'ERR_DATA'
  | 'ERR_NON_FINITE'
  | 'ERR_LIBTORCH'
  | 'ERR_LIBTORCH_SETUP'
  | 'ERR_NATIVE_ADDON'
  | 'ERR_INCOMPATIBLE_MODELS'
  | DistributedErrorCode

/** The ways distributed training fails, each its own code (see {@link DistributedError}). */
export type DistributedErrorCode = 'ERR_DIST_TIMEOUT' | 'ERR_DIST_PEER_LOST' | 'ERR_DIST_UNREACHABLE' | 'ERR_DIST_ADDRESS_IN_USE' | 'ERR_DIST_COLLECTIVE'

/**
 * The longest message an error keeps: room for two paths of PATH_MAX (4096) and the
 * sentence around them. A value echoed into a message (a name read from a file, a string
 * passed where a number was expected) can be megabytes long; the middle is left out.
 */
export const MAX_MESSAGE_LENGTH = 10_000

function bounded(message: string): string {
  if (message.length <= MAX_MESSAGE_LENGTH) return message
  const keep = MAX_MESSAGE_LENGTH / 2
  return `${message.slice(0, keep)} … (${message.length - 2 * keep} characters left out) … ${message.slice(-keep)}`
}

/**
 * A user's text (an identity name, a token) quoted for a message: in full up to `max`
 * characters, else its start and its length, so a 1M-character name costs a short line.
 */
export function quoted(text: string, max = 100): string {
  if (text.length <= max) return JSON.stringify(text)
  return `${JSON.stringify(text.slice(0, max))}… (${text.length} characters)`
}

export class FaceNetError extends Error {
  readonly code: FaceNetErrorCode

  constructor(code: FaceNetErrorCode, message: string, options?: ErrorOptions) {
    super(bounded(message), options)
    this.code = code
    this.name = new.target.name
  }
}

/** An option or argument has a value the library cannot use. */
export class InvalidArgumentError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_INVALID_ARGUMENT', message, options)
  }
}

/**
 * Refuses keys an options object does not have: a misspelt option (`learningRate`,
 * `epoch`) would otherwise be ignored and the default used without a word.
 */
export function checkKeys(what: string, options: object, known: readonly string[]): void {
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError(`${what} must be an object, got ${String(options)}`)
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new InvalidArgumentError(`${what}: unknown option '${key}'; the options are ${known.join(', ')}`)
  }
}

/** Input data has the wrong length, shape or element type. */
export class ShapeError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_SHAPE', message, options)
  }
}

/**
 * The resource is in use: a run folder locked by another process (`holder` says which),
 * or a model that is already training.
 */
export class BusyError extends FaceNetError {
  /** Who holds the lock, e.g. `pid 4242 on host a since 2026-01-01T00:00:00.000Z`. */
  readonly holder?: string
  constructor(message: string, options?: ErrorOptions & { holder?: string }) {
    super('ERR_BUSY', message, options)
    if (options?.holder !== undefined) this.holder = options.holder
  }
}

/**
 * A result could not be written: the folder is missing or read-only, the disk is full,
 * the path is a folder. `file` names it. Anything computed before is already reported.
 */
export class OutputError extends FaceNetError {
  readonly file: string
  constructor(file: string, message: string, options?: ErrorOptions) {
    super('ERR_OUTPUT', `${file}: ${message}`, options)
    this.file = file
  }
}

/** The architecture name is not one the model zoo knows. */
export class UnknownArchError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_UNKNOWN_ARCH', message, options)
  }
}

/** The requested device (e.g. `cuda:1`) does not exist on this machine. */
export class DeviceUnavailableError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_DEVICE_UNAVAILABLE', message, options)
  }
}

/** The model was disposed before, or while, the call was made. */
export class DisposedError extends FaceNetError {
  constructor(message = 'the model has been disposed; create a new one with FaceNet.create()') {
    super('ERR_DISPOSED', message)
  }
}

/** libtorch itself failed (out of memory, an internal error). */
export class TorchError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_TORCH', message, options)
  }
}

/**
 * A weights file cannot be used: missing, unreadable, truncated, not a format the library
 * reads, holding another arch or tensors the model does not have, or (a PyTorch `.pt`) a
 * pickle that would import or call anything but tensor rebuilds. The message names the
 * file and what was refused.
 */
export class WeightsError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_WEIGHTS', message, options)
  }
}

/**
 * A dataset file is bad: corrupt, truncated, empty, not an image, unreadable, malformed
 * (an `.npy` header, a pairs file), or missing. `file` names it.
 */
export class DataError extends FaceNetError {
  /** The offending file or folder. */
  readonly file: string

  constructor(file: string, message: string, options?: ErrorOptions) {
    super('ERR_DATA', `${file}: ${message}`, options)
    this.file = file
  }
}

/**
 * A loss, gradient or weight became NaN or infinite during training. The step that hit it
 * did not update the weights; `checkpoint`, when set, is the last good checkpoint.
 */
export class NonFiniteError extends FaceNetError {
  checkpoint?: string
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_NON_FINITE', message, options)
  }
}

/**
 * Distributed training failed; the message names the rendezvous address and the ranks.
 * `code` says how: `ERR_DIST_PEER_LOST` (another rank's process is gone: killed, crashed),
 * `ERR_DIST_TIMEOUT` (no answer within the timeout), `ERR_DIST_UNREACHABLE` (MASTER_ADDR:
 * MASTER_PORT cannot be reached), `ERR_DIST_ADDRESS_IN_USE` (rank 0 cannot host the
 * rendezvous: the port is taken), `ERR_DIST_COLLECTIVE` (c10d refused a call).
 */
export class DistributedError extends FaceNetError {
  declare readonly code: DistributedErrorCode
  constructor(code: DistributedErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options)
  }
}

const distributed = (code: DistributedErrorCode) =>
  class extends DistributedError {
    constructor(message: string, options?: ErrorOptions) {
      super(code, message, options)
      this.name = 'DistributedError'
    }
  }

/** A place the libtorch search looked, and what it found there. */
export interface LibtorchSearchResult {
  place: string
  result: string
}

/**
 * No usable libtorch 2.11.0 was found when the module loaded (or it failed to load). The
 * message names every place searched, the version needed and the command that installs it
 * (`npx facenet setup`); `searched` lists the same places.
 */
export class LibtorchNotFoundError extends FaceNetError {
  readonly searched: readonly LibtorchSearchResult[]
  constructor(message: string, searched: readonly LibtorchSearchResult[], options?: ErrorOptions) {
    super('ERR_LIBTORCH', message, options)
    this.searched = searched
  }
}

/** libtorch could not be provisioned (`facenet setup`): no Python, no network, a full disk, a pip failure. */
export class SetupError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_LIBTORCH_SETUP', message, options)
  }
}

/**
 * The prebuilt addon for this platform (`facenet-torch-linux-x64-gnu`, an optional
 * dependency) is not installed or cannot be loaded.
 */
export class NativeAddonError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_NATIVE_ADDON', message, options)
  }
}

/**
 * Embeddings of two models that do not share an embedding space were about to be compared
 * (a gallery embedded by one, probes by the other). Two models share one when their weights
 * are the same, or when one was trained with `harmonic: { with: other }` (FaceNet §7).
 */
export class IncompatibleModelsError extends FaceNetError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_INCOMPATIBLE_MODELS', message, options)
  }
}

// These codes are raised in TS only; the native side never reports them. ERR_DATA it does
// report (a packed file gone bad), with the file first in its message: see fromCoreDataError.
type TsOnlyCode = 'ERR_DATA' | 'ERR_OUTPUT' | 'ERR_LIBTORCH' | 'ERR_LIBTORCH_SETUP' | 'ERR_NATIVE_ADDON' | 'ERR_INCOMPATIBLE_MODELS'
const byCode: Record<Exclude<FaceNetErrorCode, TsOnlyCode>, new (message: string, options?: ErrorOptions) => FaceNetError> = {
  ERR_INVALID_ARGUMENT: InvalidArgumentError,
  ERR_SHAPE: ShapeError,
  ERR_BUSY: BusyError,
  ERR_NON_FINITE: NonFiniteError,
  ERR_UNKNOWN_ARCH: UnknownArchError,
  ERR_DEVICE_UNAVAILABLE: DeviceUnavailableError,
  ERR_DISPOSED: DisposedError,
  ERR_TORCH: TorchError,
  ERR_WEIGHTS: WeightsError,
  ERR_DIST_TIMEOUT: distributed('ERR_DIST_TIMEOUT'),
  ERR_DIST_PEER_LOST: distributed('ERR_DIST_PEER_LOST'),
  ERR_DIST_UNREACHABLE: distributed('ERR_DIST_UNREACHABLE'),
  ERR_DIST_ADDRESS_IN_USE: distributed('ERR_DIST_ADDRESS_IN_USE'),
  ERR_DIST_COLLECTIVE: distributed('ERR_DIST_COLLECTIVE'),
}

/**
 * The code and message of an error the native binding raised: a plain `Error` whose `code`
 * is one of the core's `ERR_*` codes (the binding sets it as napi's custom status). The one
 * place that recognizes them; undefined for any other error.
 */
export function bindingError(error: unknown): { code: string; message: string } | undefined {
  if (!(error instanceof Error) || error instanceof FaceNetError) return undefined
  const code = (error as { code?: unknown }).code
  // Node's own errors have ERR_* codes too (ERR_INVALID_ARG_TYPE): only the core's count.
  const native = typeof code === 'string' && (Object.hasOwn(byCode, code) || code === 'ERR_DATA')
  return native ? { code, message: error.message } : undefined
}

/**
 * The native binding's error as the matching {@link FaceNetError} subclass; anything else
 * passes through.
 */
export function fromBindingError(error: unknown): unknown {
  const coded = bindingError(error)
  if (!coded) return error
  const ErrorClass = byCode[coded.code as Exclude<FaceNetErrorCode, TsOnlyCode>]
  return ErrorClass ? new ErrorClass(coded.message, { cause: error }) : error
}

/** Awaits a binding call and rethrows its error as a {@link FaceNetError}. */
export async function callBinding<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    throw fromBindingError(error)
  }
}
