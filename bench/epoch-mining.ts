/**
 * The notebook's per-epoch triplet list (epoch mining: every anchor-positive pair of the
 * whole set with a random semi-hard negative), ours through the public API
 * (`mineTriplets(…, { mining: 'epoch' })`) beside the vectorized PyTorch twin of
 * bench/epoch_mining.py, on N random unit vectors (d = 128, 10 images per identity),
 * `chunk` anchors at a time on both sides. Each side runs in a fresh process, so its
 * peak-RSS growth is its own.
 *
 * Run: npx tsx bench/epoch-mining.ts [N,N,…=20000] [chunk=256] [--ours-only N,N,…]  (N = 0: no side-by-side run)
 * The twin is O(pairs × N) memory traffic per chunk: at N = 100,000 it needs hours on
 * 2 cores, so `--ours-only 100000` times ours alone there.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { mineTriplets } from '../src'
import { mulberry32, unitRows } from './unit-rows'

const root = resolve(__dirname, '..')
const D = 128
const PER_IDENTITY = 10

interface Run {
  s: number
  peak_mb: number
  triplets: number
  no_semi_hard?: number
}

/** N unit rows from a seeded generator, identities of 10 consecutive rows. */
function dataset(n: number): { embeddings: Float32Array; labels: Int32Array } {
  const embeddings = unitRows(n, D, mulberry32(1))
  return { embeddings, labels: Int32Array.from({ length: n }, (_, i) => Math.floor(i / PER_IDENTITY)) }
}

async function child(n: number, chunk: number): Promise<void> {
  const { embeddings, labels } = dataset(n)
  const base = process.resourceUsage().maxRSS
  const t = performance.now()
  const mined = await mineTriplets(embeddings, labels, { mining: 'epoch', chunk, seed: 1 })
  const s = (performance.now() - t) / 1000
  const peak = process.resourceUsage().maxRSS
  console.log(JSON.stringify({ s, peak_mb: (peak - base) / 1024, triplets: mined.anchors.length, stats: mined.stats }))
}

const lastJson = (out: string): Run => JSON.parse(out.trim().split('\n').pop()!) as Run
const ours = (n: number, chunk: number) =>
  lastJson(execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', String(n), String(chunk)], { encoding: 'utf8' }))

function main(): void {
  const sizes = (process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : '20000')
    .split(',')
    .map(Number)
    .filter((n) => n > 0)
  const chunk = Number(process.argv[3] && !process.argv[3].startsWith('--') ? process.argv[3] : 256)
  const at = process.argv.indexOf('--ours-only')
  const oursOnly = at >= 0 ? process.argv[at + 1]!.split(',').map(Number) : []
  const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
  console.log(`epoch mining, d = ${D}, ${PER_IDENTITY} images per identity, chunk ${chunk}, CPU, ${cpus().length} CPUs`)
  console.log('N         ours s   torch s   torch/ours   ours peak MB   torch peak MB   triplets (ours / torch)')
  for (const n of sizes) {
    const o = ours(n, chunk)
    const t = lastJson(execFileSync(python, [join(__dirname, 'epoch_mining.py'), String(n), String(chunk)], { encoding: 'utf8' }))
    console.log(
      `${String(n).padEnd(8)} ${o.s.toFixed(1).padStart(7)} ${t.s.toFixed(1).padStart(9)} ${(t.s / o.s).toFixed(1).padStart(12)}` +
        `${o.peak_mb.toFixed(0).padStart(15)} ${t.peak_mb.toFixed(0).padStart(15)}   ${o.triplets} / ${t.triplets}`,
    )
  }
  for (const n of oursOnly) {
    const o = ours(n, chunk)
    console.log(`${String(n).padEnd(8)} ${o.s.toFixed(1).padStart(7)} ${'(not run)'.padStart(9)} ${''.padStart(12)}${o.peak_mb.toFixed(0).padStart(15)} ${''.padStart(15)}   ${o.triplets}`)
  }
}

if (process.argv[2] === '--child') {
  void child(Number(process.argv[3]), Number(process.argv[4]))
} else {
  main()
}
