import { unlinkSync } from 'node:fs'
import { link, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { BusyError, OutputError } from './errors'
import { readRegularFile } from './regular-file'

/** The lock file a run folder holds while a process writes to it. */
export const LOCK_FILE = '.facenet.lock'

/** What the lock file records about its holder. */
interface Holder {
  pid: number
  host: string
  /** ISO time the lock was taken. */
  started: string
}

/** A held run-folder lock; {@link release} (or `await using`) gives it back. */
export interface RunLock extends AsyncDisposable {
  /** The lock file. */
  readonly file: string
  release(): Promise<void>
}

/** Whether process `pid` exists on this machine (EPERM: it exists, owned by someone else). */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function describe(holder: Holder): string {
  return `pid ${holder.pid} on host ${holder.host} since ${holder.started}`
}

function parseHolder(text: string): Holder | undefined {
  try {
    const value = JSON.parse(text) as Partial<Holder>
    if (Number.isInteger(value.pid) && typeof value.host === 'string' && typeof value.started === 'string') return value as Holder
  } catch {
    // Garbage in the lock file: nobody can hold it.
  }
  return undefined
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readRegularFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/**
 * Takes the lock of run folder `dir` (created if missing) for this process: a file holding
 * the PID, host and start time. A lock whose holder is no longer running on this host
 * (killed with SIGKILL, a crash) or that is unreadable is stale and taken over. A live
 * holder makes it reject with {@link BusyError} naming that holder. The lock file is
 * removed by `release()`, and at process exit if it was not released.
 */
export async function acquireRunLock(dir: string): Promise<RunLock> {
  const root = resolve(dir)
  const file = join(root, LOCK_FILE)
  try {
    await mkdir(root, { recursive: true })
  } catch (cause) {
    throw new OutputError(root, `cannot be used as a run folder (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  }
  const me: Holder = { pid: process.pid, host: hostname(), started: new Date().toISOString() }
  const mine = JSON.stringify(me) + '\n'
  // Written whole under a private name, then linked into place: link() fails if the lock
  // exists, so two processes can never both succeed, and no one ever reads half a lock.
  const temp = `${file}.${process.pid}.${Date.now()}.tmp`
  try {
    await writeFile(temp, mine, { flag: 'wx' })
  } catch (cause) {
    throw new OutputError(root, `cannot write its lock file (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  }
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await link(temp, file)
        break
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 4) throw error
      }
      const text = await readText(file)
      if (text === undefined) continue
      const holder = parseHolder(text)
      const stale = !holder || (holder.host === me.host && !isRunning(holder.pid))
      if (!stale) {
        const who = describe(holder)
        const gone = holder.host === me.host ? '' : `; if that process is gone, delete ${file}`
        throw new BusyError(`${root} is in use by another run (${who}); wait for it to end or stop it${gone}`, { holder: who })
      }
      // Take the stale lock out of the way under a unique name; if what was moved is not
      // the lock we judged stale (a live process took over meanwhile), put it back.
      const moved = `${file}.${process.pid}.stale`
      try {
        await rename(file, moved)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue
        throw error
      }
      if ((await readText(moved)) !== text) await link(moved, file).catch(() => {})
      await rm(moved, { force: true })
    }
  } catch (cause) {
    if (cause instanceof BusyError) throw cause
    throw new OutputError(root, `cannot take its lock file (${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message})`, { cause })
  } finally {
    await rm(temp, { force: true })
  }

  let held = true
  // A process.exit() (a second Ctrl-C) skips finally blocks; this still frees the folder.
  const onExit = () => {
    try {
      unlinkSync(file)
    } catch {
      // Already gone.
    }
  }
  process.once('exit', onExit)
  const release = async (): Promise<void> => {
    if (!held) return
    held = false
    process.off('exit', onExit)
    // Only our own lock: never one a later run took over after deleting ours by hand.
    if ((await readText(file).catch(() => undefined)) === mine) await rm(file, { force: true })
  }
  return { file, release, [Symbol.asyncDispose]: release }
}
