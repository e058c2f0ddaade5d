/**
 * The one check every reader of a user-given path runs before opening it. A FIFO blocks the
 * reader until something writes to it (for ever, usually), and a device such as `/dev/zero`
 * or `/dev/urandom` reads without end until memory runs out; both pass `fs.stat` without
 * error, so the file's type is checked from its metadata, which does not open it.
 */
import { readFileSync, statSync, type Stats } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { DataError } from './errors'

/** Why a file of this type cannot be read as a file's contents, or undefined for a regular file. */
export function notRegularProblem(info: Stats): string | undefined {
  if (info.isFile()) return undefined
  const kind = info.isFIFO()
    ? 'a FIFO'
    : info.isCharacterDevice()
      ? 'a character device'
      : info.isBlockDevice()
        ? 'a block device'
        : info.isSocket()
          ? 'a socket'
          : info.isDirectory()
            ? 'a directory'
            : 'not a plain file'
  return `is not a regular file (${kind})`
}

function statProblem(cause: unknown): string {
  return `cannot be read (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`
}

/**
 * The size of the regular file at `path`; a `DataError` naming it when it is missing,
 * unreadable, a FIFO, a device, a socket or a directory.
 */
export async function regularFileSize(path: string): Promise<number> {
  let info: Stats
  try {
    info = await stat(path)
  } catch (cause) {
    throw new DataError(path, statProblem(cause), { cause })
  }
  const problem = notRegularProblem(info)
  if (problem) throw new DataError(path, problem)
  return info.size
}

/** {@link regularFileSize}, synchronously, for load-time code such as torch discovery. */
export function regularFileSizeSync(path: string): number {
  let info: Stats
  try {
    info = statSync(path)
  } catch (cause) {
    throw new DataError(path, statProblem(cause), { cause })
  }
  const problem = notRegularProblem(info)
  if (problem) throw new DataError(path, problem)
  return info.size
}

/** Whether `path` is a regular file (false for anything missing or special), without opening it. */
export function isRegularFileSync(path: string): boolean {
  try {
    return statSync(path).isFile()
  } catch {
    return false
  }
}

/**
 * `fs.readFile` of a regular file only. A missing or unreadable path rejects with Node's
 * own error (its `code`, e.g. `ENOENT`, is kept for callers that treat absence as normal);
 * a FIFO, device, socket or directory rejects with a `DataError` naming it, unopened.
 */
export async function readRegularFile(path: string): Promise<Buffer>
export async function readRegularFile(path: string, encoding: 'utf8'): Promise<string>
export async function readRegularFile(path: string, encoding?: 'utf8'): Promise<Buffer | string> {
  const problem = notRegularProblem(await stat(path))
  if (problem) throw new DataError(path, problem)
  return encoding ? readFile(path, encoding) : readFile(path)
}

/** {@link readRegularFile}, synchronously. */
export function readRegularFileSync(path: string, encoding: 'utf8'): string {
  const problem = notRegularProblem(statSync(path))
  if (problem) throw new DataError(path, problem)
  return readFileSync(path, encoding)
}
