/**
 * Checkpoint files: their names (`step-00000042.ckpt`, sorting by step), the training
 * state each carries, retention, and the newest of a folder.
 */
import { open, readdir, rm, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { SamplerState, ShuffleSamplerState } from '../data/sampler'
import { DataError, InvalidArgumentError, WeightsError } from '../errors'
import { isRunning } from '../run-lock'
import type { ResolvedOptions } from './options'
import { notRegularProblem } from '../regular-file'

const CHECKPOINT = /^step-(\d+)\.ckpt$/
/** What the core's atomic write names a checkpoint while it writes it: `.step-N.ckpt.tmp-PID-N`. */
const PARTIAL = /^\.step-\d+\.ckpt\.tmp-(\d+)-\d+$/

/** The file name of the checkpoint taken after `step` steps. */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, '0')}.ckpt`
}

/** Whether `name` is a complete checkpoint's file name. */
export function isCheckpoint(name: string): boolean {
  return CHECKPOINT.test(name)
}

/** The pid of the process writing `name`, when it is a checkpoint being written; else `undefined`. */
export function partialCheckpointWriter(name: string): number | undefined {
  const pid = PARTIAL.exec(name)?.[1]
  return pid === undefined ? undefined : Number(pid)
}

/** The step a checkpoint file (a name or a path) is named for, or `undefined` for another name. */
export function checkpointStep(file: string): number | undefined {
  const step = /step-(\d+)\.ckpt$/.exec(file)?.[1]
  return step === undefined ? undefined : Number(step)
}

/** What a checkpoint's metadata carries besides the weights and optimizer state. */
export interface CheckpointState {
  format: 'facenet-torch-checkpoint'
  version: 1
  step: number
  /** Epoch and next batch of the data order, where training continues. */
  epoch: number
  batch: number
  sampler?: SamplerState | ShuffleSamplerState
  /** Identities of the data (the class head's rows), when a loss classifies. */
  classes?: number
  /** Ranks of a data-parallel run; absent: 1. */
  worldSize?: number
  options: ResolvedOptions
}

/** The `checkpoint` and `step` metadata of a checkpoint's safetensors header, read without its tensors. */
export async function readCheckpointHeader(file: string): Promise<{ checkpoint?: string; step?: string }> {
  let handle
  // Opening a FIFO blocks until a writer comes; refuse it (and devices) unopened.
  const special = await stat(file).then(notRegularProblem, () => undefined)
  if (special) throw new DataError(file, special)
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
export function checkState(
  file: string,
  json: string,
  headerStep: string | undefined,
  samplerAt: (step: number) => { batchesPerEpoch: number } | undefined,
): CheckpointState {
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
  const named = checkpointStep(file)
  if (named !== undefined && named !== state.step) throw bad(`says step ${state.step}, but the file is named for step ${named}`)
  if (state.step === 0 && (state.epoch > 0 || state.batch > 0)) throw bad(`is at epoch ${state.epoch} batch ${state.batch} after 0 steps`)
  // The sampler of the phase that the step resumes in: its epochs are the ones counted.
  const sampler = samplerAt(state.step)
  if (sampler && state.batch > sampler.batchesPerEpoch) {
    throw bad(`is at batch ${state.batch}, but an epoch of this data has ${sampler.batchesPerEpoch} batches`)
  }
  if (typeof state.options !== 'object' || state.options === null) throw bad('has no options')
  return state
}

/**
 * Keeps the newest `keep` checkpoints of `dir`; names sort by step. Also deletes the
 * temporary files of writes that a killed process left behind (`.step-N.ckpt.tmp-PID-…`,
 * never picked as checkpoints), once their writer is no longer running.
 */
export async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const entries = await readdir(dir)
  const files = entries.filter(isCheckpoint).sort()
  for (const old of files.slice(0, Math.max(0, files.length - keep))) {
    await rm(join(dir, old), { force: true })
  }
  for (const name of entries) {
    const writer = partialCheckpointWriter(name)
    if (writer !== undefined && writer !== process.pid && !isRunning(writer)) {
      await rm(join(dir, name), { force: true })
    }
  }
}


/** The newest complete checkpoint in `dir`, or `undefined`. */
export async function latestCheckpoint(dir: string): Promise<string | undefined> {
  let files: string[]
  try {
    files = (await readdir(dir)).filter(isCheckpoint).sort()
  } catch {
    return undefined
  }
  const newest = files.at(-1)
  return newest ? join(resolve(dir), newest) : undefined
}
