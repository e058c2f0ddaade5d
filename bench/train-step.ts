/**
 * Training-step throughput (images/s) on a P×K batch of random uint8 pixels: ours (the
 * model's worker through the binding's trainStep, the step Trainer.fit runs: normalize,
 * forward in train mode, online semi-hard mining, triplet loss, backward, AdaGrad) beside
 * the PyTorch twin doing the same (bench/train_step.py). Each side is its own process
 * (a line server), created and warmed up once per arch; then steps alternate ours,
 * PyTorch, ours, PyTorch… for `pairs` pairs, and the median of the per-pair ratios is
 * printed with each side's peak RSS.
 *
 * Run: npx tsx bench/train-step.ts [archs=nn4,nns1,nn1,inception-resnet-v1] [threads=1] [pairs=5] [device=cpu] [precision=fp32]
 * Batches: arch:PxK overrides, e.g. nn4:15x20 (defaults below).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { type Arch, type Device, FaceNet, type Precision } from '../src'
import { modelBinding } from '../src/model'

const root = resolve(__dirname, '..')
const python = process.env.FACENET_BENCH_PYTHON ?? readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

/** P×K per arch, sized so that a pair of steps takes seconds on 2 loaded cores. */
const BATCH: Record<string, [number, number]> = {
  tiny: [15, 20],
  nn4: [10, 10],
  nns1: [10, 10],
  nns2: [15, 20],
  nn1: [8, 4],
  'inception-resnet-v1': [8, 4],
}

/** A child process answering one JSON line per command line. */
class LineServer {
  readonly #child: ChildProcessWithoutNullStreams
  readonly #lines: AsyncIterator<string>
  constructor(command: string, args: string[]) {
    this.#child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] as never }) as ChildProcessWithoutNullStreams
    this.#lines = createInterface({ input: this.#child.stdout })[Symbol.asyncIterator]()
  }
  async read(): Promise<Record<string, number>> {
    for (;;) {
      const next = await this.#lines.next()
      if (next.done) throw new Error('benchmark child exited')
      if (next.value.startsWith('{')) return JSON.parse(next.value) as Record<string, number>
    }
  }
  async ask(command: string): Promise<Record<string, number>> {
    this.#child.stdin.write(`${command}\n`)
    return this.read()
  }
  close(): void {
    this.#child.stdin.end()
  }
}

/** Our side as a line server (runs in a child so that its peak RSS is its own). */
async function child(arch: Arch, p: number, k: number, threads: number, device: Device, precision: Precision): Promise<void> {
  const model = await FaceNet.create({ arch, threads, device, seed: 0 })
  const binding = modelBinding(model)
  await binding.configureTraining({
    optimizer: {
      name: 'adagrad', lr: 0.05, momentum: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-10,
      schedule: 'constant', stepEvery: 1, gamma: 1, totalSteps: 1, minLr: 0, warmupSteps: 0, maxGradNorm: 0,
    },
    mining: {
      miner: 'semi-hard', margin: 0.2, choice: 'random', fallback: 'nearest-farther-else-farthest',
      distance: 'squared-l2', seed: 0,
    },
    reducer: 'mean',
    normalize: true,
    seed: 0,
    precision,
  })
  const { height, width } = model.inputSize
  const n = p * k
  const pixels = new Uint8Array(n * height * width * 3)
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 2654435761) >>> 24
  const labels = Int32Array.from({ length: n }, (_, i) => Math.floor(i / k))
  console.log(JSON.stringify({ ready: true }))
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'step') {
      const start = performance.now()
      const stats = await binding.trainStep(pixels, labels, n, height, width)
      console.log(JSON.stringify({ seconds: (performance.now() - start) / 1000, loss: stats.loss }))
    } else if (line === 'rss') {
      console.log(JSON.stringify({ peak_mb: process.resourceUsage().maxRSS / 1024 }))
    }
  }
  model.dispose()
}

/** tsx only when running from source: bench/gpu/pack.sh ships this file compiled to JS. */
const nodeArgs = __filename.endsWith('.ts') ? ['--import', 'tsx'] : []

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

async function main(): Promise<void> {
  const archs = (process.argv[2] ?? 'nn4,nns1,nn1,inception-resnet-v1').split(',')
  const threads = Number(process.argv[3] ?? 1)
  const pairs = Number(process.argv[4] ?? 5)
  const device = (process.argv[5] ?? 'cpu') as Device
  const precision = (process.argv[6] ?? 'fp32') as Precision
  console.log(`train step (semi-hard, triplet loss, AdaGrad), device ${device}, ${precision}, ${threads} threads, ${pairs} pairs (${cpus()[0]?.model ?? 'unknown CPU'})`)
  console.log('arch                  P×K      ours img/s   PyTorch img/s   ours/PyTorch (median of pairs)   ours peak MB   PyTorch peak MB')
  const rows = []
  for (const spec of archs) {
    const [arch, override] = spec.split(':') as [Arch, string | undefined]
    const [p, k] = override ? (override.split('x').map(Number) as [number, number]) : (BATCH[arch] ?? [8, 4])
    const n = p * k
    const ours = new LineServer(process.execPath, [...nodeArgs, __filename, '--child', arch, String(p), String(k), String(threads), device, precision])
    const theirs = new LineServer(python, [join(__dirname, 'train_step.py'), arch, String(p), String(k), String(threads), device, precision])
    await ours.read()
    await theirs.read()
    await ours.ask('step') // warm-up: allocator, oneDNN primitives, optimizer state
    await theirs.ask('step')
    const a: number[] = []
    const b: number[] = []
    for (let i = 0; i < pairs; i++) {
      a.push(n / (await ours.ask('step')).seconds!)
      b.push(n / (await theirs.ask('step')).seconds!)
    }
    const ra = await ours.ask('rss')
    const rb = await theirs.ask('rss')
    ours.close()
    theirs.close()
    const ratio = median(a.map((x, i) => x / b[i]!))
    const row = { arch, p, k, ours: median(a), pytorch: median(b), ratio, oursPeakMb: ra.peak_mb, pytorchPeakMb: rb.peak_mb, pytorchGpuPeakMb: rb.gpu_peak_mb, oursAll: a, pytorchAll: b }
    rows.push(row)
    console.log(
      `${arch.padEnd(22)}${`${p}×${k}`.padEnd(7)}${row.ours.toFixed(1).padStart(12)}${row.pytorch.toFixed(1).padStart(16)}${ratio.toFixed(2).padStart(15)}${'' .padStart(18)}` +
        `${ra.peak_mb!.toFixed(0).padStart(13)}${rb.peak_mb!.toFixed(0).padStart(18)}` +
        (rb.gpu_peak_mb !== undefined ? `   PyTorch GPU peak ${rb.gpu_peak_mb.toFixed(0)} MB` : ''),
    )
  }
  console.log(JSON.stringify({ bench: 'train-step', device, precision, threads, pairs, rows }))
}

if (process.argv[2] === '--child') {
  const [, , , arch, p, k, threads, device, precision] = process.argv
  void child(arch as Arch, Number(p), Number(k), Number(threads), device as Device, (precision ?? 'fp32') as Precision)
} else {
  void main()
}
