/**
 * The training log (JSONL, one line per step and per epoch): appended synchronously, and
 * cut back to a checkpoint's step when a run resumes from it.
 */
import { closeSync, openSync, writeSync } from 'node:fs'
import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { DataError, OutputError } from '../errors'
import type { CheckpointState } from './checkpoints'
import { readRegularFile } from '../regular-file'

/**
 * Cuts `file` back to what the checkpoint `state` had seen: step lines up to its step,
 * epoch lines of the epochs before its epoch. Torn last lines (a kill mid-write) go too.
 * Rewritten under a temporary name and renamed, so a kill now leaves one or the other.
 */
export async function trimLog(file: string, state: CheckpointState): Promise<void> {
  let text: string
  try {
    text = await readRegularFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
    if (error instanceof DataError) throw error
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
export interface Log {
  write(line: string): void
  close(): void
}

/**
 * The training log, appended to synchronously: a line written is on disk before the step's
 * checkpoint is, so a kill can never leave a checkpoint ahead of its log. The log is a
 * record, not the run: if it cannot be written (a full disk), that is reported once and
 * training goes on; checkpoints keep the progress.
 */
export async function openLog(file: string, warn: (message: string) => void): Promise<Log> {
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
