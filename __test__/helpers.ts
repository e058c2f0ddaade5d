/** Deterministic test data and a CLI runner shared by the specs (no Math.random, so failures reproduce). */
import { spawn } from 'node:child_process'
import { copyFile, mkdir, readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'

/** The shipped LFW photos (data/lfw), one folder per identity. */
export const LFW = join(resolve(__dirname, '..'), 'data', 'lfw')

/**
 * Copies the first `perIdentity` photos (by name) of each of `identities` from the shipped
 * LFW into `dest`/Name/, an ImageFolder; resolves to the file names copied per identity.
 */
export async function copyLfwPhotos(dest: string, identities: readonly string[], perIdentity: number): Promise<Record<string, string[]>> {
  const copied: Record<string, string[]> = {}
  for (const id of identities) {
    await mkdir(join(dest, id), { recursive: true })
    const files = (await readdir(join(LFW, id))).filter((f) => f.endsWith('.jpg')).sort().slice(0, perIdentity)
    for (const f of files) await copyFile(join(LFW, id, f), join(dest, id, f))
    copied[id] = files
  }
  return copied
}

/** How a `facenet` subprocess ended, with all it printed. */
export interface CliRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Starts the `facenet` command (node + tsx on src/cli/index.ts) as a real subprocess. */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const root = resolve(__dirname, '..')
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'index.ts'), ...args], {
    cwd: root,
    env: { ...process.env, FORCE_COLOR: '0', ...env },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const done = new Promise<CliRun>((resolveRun) => child.on('close', (code, signal) => resolveRun({ code, signal, stdout, stderr })))
  return { child, done }
}

/** `length` pseudo-random bytes (xorshift32). */
export function pixels(length: number, seed: number): Uint8Array {
  const data = new Uint8Array(length)
  let state = seed >>> 0 || 1
  for (let i = 0; i < data.length; i++) {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    data[i] = state & 0xff
  }
  return data
}

/** L2 norm of each row of an N×dim row-major array. */
export function rowNorms(embeddings: Float32Array, dim: number): number[] {
  const norms: number[] = []
  for (let row = 0; row < embeddings.length / dim; row++) {
    let sum = 0
    for (let j = 0; j < dim; j++) sum += embeddings[row * dim + j]! ** 2
    norms.push(Math.sqrt(sum))
  }
  return norms
}

/** Uniform [0, 1) numbers (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** The ArcFace/insightface 112×112 five-point template, the points alignment maps landmarks onto. */
export const TEMPLATE = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
]
