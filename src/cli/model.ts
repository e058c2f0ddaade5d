import { stat, writeFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { OutputError } from '../errors'
import { FaceNet, type Arch } from '../model'
import type { Device } from '../device'
import { CENTER_CROP_KEY, storedCenterCrop } from '../inference'
import { storedThreshold, THRESHOLD_KEY } from '../threshold'

/**
 * Keys of a model file's metadata the CLI reads and writes (strings in the safetensors
 * header, see `FaceNet.save(path, { metadata })`): `train` stores the preprocessing, `eval`
 * the calibrated threshold, so that `embed`, `compare`, `identify` and `cluster` see what
 * training and evaluation saw.
 */
export const META = {
  centerCrop: CENTER_CROP_KEY,
  threshold: THRESHOLD_KEY,
  thresholdMetric: 'thresholdMetric',
  thresholdFrom: 'thresholdFrom',
} as const

export interface ModelArgs {
  /** Default: the pretrained `dlib-resnet-v1` shipped in the package. */
  model?: string
  arch?: Arch
  device: string
  threads?: number
  centerCrop?: number
  batchSize?: number
}

/**
 * The `--model` file, else the shipped pretrained model; says on stderr which it is, as
 * `role` (`identify --gallery-model` loads a second one).
 */
export async function loadModel(args: ModelArgs, role = 'model'): Promise<FaceNet> {
  const common = { device: args.device as Device, ...(args.threads ? { threads: args.threads } : {}) }
  if (args.model === undefined) {
    const model = await FaceNet.pretrained('dlib-resnet-v1', common)
    process.stderr.write(`${role}: the pretrained dlib-resnet-v1 shipped with facenet-torch (--${role} to use another)\n`)
    return model
  }
  const file = resolve(args.model)
  const model = await FaceNet.load(file, { ...common, ...(args.arch ? { arch: args.arch } : {}) })
  process.stderr.write(`${role}: ${file} (${model.arch})\n`)
  return model
}

/** The flag's center crop, else the one stored with the model at training, else 1. */
export function centerCropOf(model: FaceNet, args: { centerCrop?: number }): number {
  return args.centerCrop ?? storedCenterCrop(model)
}

/** The `--threshold` flag, else the threshold `facenet eval` stored with the model. */
export function thresholdOf(model: FaceNet, flag: number | undefined): number | undefined {
  return flag ?? storedThreshold(model)
}

export { listImages } from '../data/list-images'

const problem = (cause: unknown): string => (cause as NodeJS.ErrnoException).code ?? (cause as Error).message

/**
 * Checks, before any work, that a result can be written to `file`: its folder exists and
 * `file` is not a folder. Returns why not, for a usage error naming the flag.
 */
export async function outputProblem(file: string): Promise<string | undefined> {
  const folder = await stat(dirname(file)).catch(() => undefined)
  if (!folder) return `the folder ${dirname(file)} does not exist`
  if (!folder.isDirectory()) return `${dirname(file)} is not a folder`
  if ((await stat(file).catch(() => undefined))?.isDirectory()) return `${file} is a folder`
  return undefined
}

/** Writes a result file, as an {@link OutputError} naming it when that fails. */
export async function writeOutput(file: string, data: string | Uint8Array): Promise<void> {
  try {
    await writeFile(file, data)
  } catch (cause) {
    throw new OutputError(file, `cannot be written (${problem(cause)})`, { cause })
  }
}
