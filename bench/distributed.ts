/**
 * Data-parallel training on the CPU over c10d's Gloo (127.0.0.1): 1 rank × 2 threads
 * (and × 1) against 2 ranks × 1 thread, on the same global P×K batch of random pixels (each rank
 * trains on its P/2 identities; mining sees all P). Prints steps/s (rank 0's wall time per
 * step, median after warm-up) and the time each step spent in collectives (3 small
 * all-gathers of the global batch's sizes, labels and embeddings, then the bucketed
 * gradient all-reduce), waiting for the slower rank included.
 *
 * Run: npx tsx bench/distributed.ts [arch=tiny] [steps=20] [P=8] [K=8]
 */
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { type Arch, FaceNet } from '../src'
import { modelBinding } from '../src/model'
import { resolveDistributed } from '../src/training/distributed'
import { bindingTrainOptions, resolveOptions } from '../src/training/options'

const [arch = 'tiny', stepsText = '20', pText = '8', kText = '8'] = process.argv.slice(2)
const STEPS = Number(stepsText)
const P = Number(pText)
const K = Number(kText)
const WARMUP = 3

async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolvePort(port))
    })
  })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** One rank: trains STEPS steps on its share of the batch and prints its timings as JSON. */
async function rank(rank: number, world: number, threads: number, port: number): Promise<void> {
  const model = await FaceNet.create({ arch: arch as Arch, device: 'cpu', threads, seed: 0 })
  const { height, width } = model.inputSize
  const options = resolveOptions({ identitiesPerBatch: P, imagesPerIdentity: K, negativesPerBatch: 0 })
  const distributed = world > 1 ? resolveDistributed({ rank, worldSize: world, masterAddr: '127.0.0.1', masterPort: port }) : undefined
  const binding = modelBinding(model)
  await binding.configureTraining(bindingTrainOptions(options, STEPS, 0, false, distributed))
  const identities = P / world
  const count = identities * K
  const pixels = new Uint8Array(count * height * width * 3)
  let state = 12345 + rank
  for (let i = 0; i < pixels.length; i++) {
    state = (state * 1103515245 + 12345) >>> 0
    pixels[i] = state >>> 24
  }
  const labels = Int32Array.from({ length: count }, (_, i) => rank * identities + Math.floor(i / K))
  const stepMs: number[] = []
  const communicationMs: number[] = []
  for (let step = 0; step < STEPS + WARMUP; step++) {
    const started = performance.now()
    const stats = await binding.trainStep(pixels, labels, count, height, width)
    if (step >= WARMUP) {
      stepMs.push(performance.now() - started)
      communicationMs.push(stats.communicationMs)
    }
  }
  console.log(JSON.stringify({ rank, stepMs: median(stepMs), communicationMs: median(communicationMs) }))
  model.dispose()
}

async function run(world: number, threads: number): Promise<{ stepMs: number; communicationMs: number }> {
  const port = await freePort()
  const outputs = await Promise.all(
    Array.from({ length: world }, (_, r) => {
      const child = spawn(process.execPath, [...process.execArgv, __filename, arch, stepsText, pText, kText], {
        env: { ...process.env, BENCH_RANK: String(r), BENCH_WORLD: String(world), BENCH_THREADS: String(threads), BENCH_PORT: String(port) },
        stdio: ['ignore', 'pipe', 'inherit'],
      })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      return new Promise<string>((resolveRun, reject) => child.on('close', (code) => (code === 0 ? resolveRun(out) : reject(new Error(`rank ${r} exited with ${code}`)))))
    }),
  )
  return JSON.parse(outputs[0]!.trim().split('\n').pop()!) as { stepMs: number; communicationMs: number }
}

async function main(): Promise<void> {
  if (process.env.BENCH_RANK !== undefined) {
    await rank(Number(process.env.BENCH_RANK), Number(process.env.BENCH_WORLD), Number(process.env.BENCH_THREADS), Number(process.env.BENCH_PORT))
    return
  }
  console.log(`${arch}, global batch ${P}×${K}, ${STEPS} steps after ${WARMUP} of warm-up`)
  console.log('| ranks × threads | steps/s | ms per step | ms in collectives per step |')
  console.log('|---|---:|---:|---:|')
  // 1 × 1 as well: on a loaded machine, 2 intra-op threads can be slower than 1.
  for (const [world, threads] of [
    [1, 2],
    [1, 1],
    [2, 1],
  ] as const) {
    const r = await run(world, threads)
    console.log(`| ${world} × ${threads} | ${(1000 / r.stepMs).toFixed(2)} | ${r.stepMs.toFixed(1)} | ${r.communicationMs.toFixed(2)} |`)
  }
}

void main()
