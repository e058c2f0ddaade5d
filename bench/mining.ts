/**
 * Online semi-hard mining + triplet loss (value and gradient) at the paper's batch
 * (B = 1800, ~40 faces per identity) and at B = 4096, d = 128, on CPU: ours through the
 * public TS API beside the PyTorch miner of bench/mining.py, alternating in one run.
 * Each measurement is a fresh process, so the peak-RSS growth is that side's alone.
 *
 * Run: npx tsx bench/mining.ts [iters=5] [rounds=2]
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { mineTriplets, tripletLoss } from '../src'
import { mulberry32, unitRows } from './unit-rows'

const root = resolve(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const D = 128

interface Run {
  ms: number[]
  peak_mb: number
}

/** Unit rows from a seeded generator; labels: 40 per identity, shuffled. */
function batch(b: number, seed: number): { embeddings: Float32Array; labels: Int32Array } {
  const rand = mulberry32(seed)
  const embeddings = unitRows(b, D, rand)
  const labels = Int32Array.from({ length: b }, (_, i) => Math.floor(i / 40))
  for (let i = b - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[labels[i], labels[j]] = [labels[j]!, labels[i]!]
  }
  return { embeddings, labels }
}

async function child(b: number, iters: number): Promise<void> {
  const { embeddings, labels } = batch(b, 0)
  const step = async (seed: number) => {
    const mined = await mineTriplets(embeddings, labels, { seed })
    await tripletLoss(embeddings, D, mined)
    return mined.stats
  }
  const base = process.resourceUsage().maxRSS
  const stats = await step(0)
  const ms: number[] = []
  for (let i = 0; i < iters; i++) {
    const t = performance.now()
    await step(i + 1)
    ms.push(performance.now() - t)
  }
  const peak = process.resourceUsage().maxRSS
  console.log(JSON.stringify({ ms, peak_mb: (peak - base) / 1024, stats }))
}

function lastJson(out: string): Run {
  return JSON.parse(out.trim().split('\n').pop()!) as Run
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

function main(): void {
  const iters = Number(process.argv[2] ?? 5)
  const rounds = Number(process.argv[3] ?? 2)
  console.log(`semi-hard mining + triplet loss (value + gradient), d = ${D}, CPU, ${cpus().length} CPUs`)
  console.log('B      ours ms   torch ms   torch/ours   ours peak MB   torch peak MB')
  for (const b of [1800, 4096]) {
    const ours: Run[] = []
    const theirs: Run[] = []
    for (let r = 0; r < rounds; r++) {
      ours.push(lastJson(execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', String(b), String(iters)], { encoding: 'utf8' })))
      theirs.push(lastJson(execFileSync(python, [join(__dirname, 'mining.py'), String(b), String(D), String(iters)], { encoding: 'utf8' })))
    }
    const o = median(ours.flatMap((x) => x.ms))
    const t = median(theirs.flatMap((x) => x.ms))
    const om = Math.max(...ours.map((x) => x.peak_mb))
    const tm = Math.max(...theirs.map((x) => x.peak_mb))
    console.log(
      `${String(b).padEnd(6)} ${o.toFixed(1).padStart(8)} ${t.toFixed(1).padStart(10)} ${(t / o).toFixed(2).padStart(12)}` +
        `${om.toFixed(0).padStart(15)} ${tm.toFixed(0).padStart(15)}`,
    )
  }
}

if (process.argv[2] === '--child') {
  void child(Number(process.argv[3]), Number(process.argv[4]))
} else {
  main()
}
