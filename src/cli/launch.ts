/**
 * `facenet train --nproc N`: N local ranks of one data-parallel run, each a child process
 * running `facenet train` with torchrun's variables set (RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR=127.0.0.1, MASTER_PORT), so the ranks run the very code that torchrun or a
 * cluster script starts. This process only forwards signals and waits.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { availableParallelism, constants } from 'node:os'
import { UsageError } from './options'

/** The value of `--nproc N` / `--nproc=N`, and argv without it; undefined when absent. */
export function splitNproc(argv: readonly string[]): { nproc?: number; rest: string[] } {
  const rest: string[] = []
  let text: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--nproc') text = argv[++i] ?? ''
    else if (arg.startsWith('--nproc=')) text = arg.slice('--nproc='.length)
    else rest.push(arg)
  }
  if (text === undefined) return { rest }
  if (!/^\d+$/.test(text) || Number(text) < 1) throw new UsageError(`--nproc must be a number of processes ≥ 1, got ${JSON.stringify(text)}`)
  return { nproc: Number(text), rest }
}

/** A port nothing listens on now, for the rendezvous. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** How long the other ranks may take to stop after one has failed, before they are killed. */
const STOP_GRACE_MS = 30_000

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with ${code}`
}

export async function launch(nproc: number, argv: readonly string[]): Promise<number> {
  if (process.env.WORLD_SIZE !== undefined) throw new UsageError('--nproc starts its own ranks; it cannot run inside a distributed run (WORLD_SIZE is set)')
  const port = process.env.MASTER_PORT ? Number(process.env.MASTER_PORT) : await freePort()
  // The ranks share the machine's cores unless told otherwise.
  const threads = argv.some((a) => a === '--threads' || a.startsWith('--threads=')) ? [] : ['--threads', String(Math.max(1, Math.floor(availableParallelism() / nproc)))]
  const script = process.argv[1]!
  const children: ChildProcess[] = []
  const exits: Promise<{ rank: number; code: number | null; signal: NodeJS.Signals | null }>[] = []
  for (let rank = 0; rank < nproc; rank++) {
    const child = spawn(process.execPath, [...process.execArgv, script, 'train', ...argv, ...threads], {
      env: { ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(nproc), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) },
      // Rank 0 reports (progress, summary); the others' stdout says the same, their errors are theirs.
      stdio: ['ignore', rank === 0 ? 'inherit' : 'ignore', 'inherit'],
    })
    children.push(child)
    exits.push(new Promise((resolve) => child.once('exit', (code, signal) => resolve({ rank, code, signal }))))
  }
  // A signal stops every rank as it stops one process (they agree on the step to stop
  // after; rank 0 writes the checkpoint); a second one quits them at once.
  let signalled = false
  const forward = (signal: NodeJS.Signals) => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
  const handlers = SIGNALS.map((signal) => [signal, () => ((signalled = true), forward(signal))] as const)
  for (const [signal, handler] of handlers) process.on(signal, handler)
  try {
    let failed: { rank: number; code: number | null; signal: NodeJS.Signals | null } | undefined
    let killTimer: NodeJS.Timeout | undefined
    const results = await Promise.all(
      exits.map((exit) =>
        exit.then((result) => {
          const bad = result.signal !== null || result.code !== 0
          // A rank stopped by a forwarded signal exits with 128 + its number, as asked.
          if (bad && !failed && !signalled) {
            failed = result
            process.stderr.write(`facenet train: rank ${result.rank} ${describeExit(result.code, result.signal)}; stopping the other ranks\n`)
            // They notice a lost rank at once; this bounds one that hangs.
            killTimer = setTimeout(() => forward('SIGKILL'), STOP_GRACE_MS)
            killTimer.unref()
          }
          return result
        }),
      ),
    )
    clearTimeout(killTimer)
    const first = failed ?? results[0]!
    if (first.signal) return 128 + (constants.signals[first.signal] ?? 0)
    return first.code ?? 1
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler)
  }
}
