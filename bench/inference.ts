/**
 * Inference throughput (images/s at batch 32) of every arch of the model zoo, beside the
 * PyTorch twin of the same network (bench/inference.py) in the same run. Per arch the two
 * sides alternate (ours, then PyTorch) so that both see the same machine state. Both
 * take uint8 N×H×W×3 pixels on the CPU, normalize, run the network in eval mode and
 * return embeddings on the CPU; both use the same number of threads. The figure is the
 * median over the timed iterations, after one warm-up batch.
 *
 * "JS ms/call" is ours alone: how long `embed()` holds the JS thread before it returns
 * its promise (the median), which is where a copy of the pixels made there would show.
 * PIXELS=float32 feeds both sides float32 pixels (0..255) instead of uint8.
 *
 * Run: npx tsx bench/inference.ts [device=cpu] [arch,arch,...|all] [threads=CPUs] [precision=fp32]
 * ITERS=N overrides the timed iterations of every arch (a GPU wants more than a CPU).
 *
 * On a machine that other work shares, run with threads=1: libtorch's OpenMP threads spin
 * at barriers and lose far more to oversubscription than one thread does, on both sides.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { availableParallelism, cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { type Arch, type Device, FaceNet, type Precision } from '../src'

const root = resolve(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const device = (process.argv[2] ?? 'cpu') as Device
const BATCH = 32
const threads = Number(process.argv[4] ?? availableParallelism())
const precision = (process.argv[5] ?? 'fp32') as Precision
const pixelKind = process.env.PIXELS === 'float32' ? 'float32' : 'uint8'

/**
 * Timed iterations per arch: fewer for the big nets, so a CPU run stays in minutes.
 * `dlib-resnet-v1` has no PyTorch twin: it is measured against dlib itself (bench/dlib-speed.ts).
 */
const ITERATIONS: Record<Exclude<Arch, 'dlib-resnet-v1'>, number> = {
  tiny: 10,
  nn1: 3,
  'nn1-paper': 3,
  nn2: 3,
  nn3: 3,
  nn4: 5,
  nns1: 5,
  nns2: 10,
  'inception-resnet-v1': 3,
  iresnet18: 3,
  iresnet34: 3,
  iresnet50: 3,
}
const archs = (process.argv[3] && process.argv[3] !== 'all' ? process.argv[3].split(',') : Object.keys(ITERATIONS)) as (keyof typeof ITERATIONS)[]

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

async function ours(arch: Arch, iterations: number): Promise<{ imagesPerSecond: number; jsMs: number }> {
  using model = await FaceNet.create({ arch, device, threads })
  const { height, width } = model.inputSize
  const bytes = new Uint8Array(BATCH * height * width * 3)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24
  const data = pixelKind === 'float32' ? Float32Array.from(bytes) : bytes
  const batch = { data, shape: [BATCH, height, width, 3] as const }
  await model.embed(batch, { precision })
  const seconds: number[] = []
  const held: number[] = []
  for (let i = 0; i < iterations; i++) {
    const start = performance.now()
    const call = model.embed(batch, { precision })
    held.push(performance.now() - start)
    await call
    seconds.push((performance.now() - start) / 1000)
  }
  return { imagesPerSecond: BATCH / median(seconds), jsMs: median(held) }
}

function pytorch(arch: Arch, iterations: number): number {
  const torchDevice = device === 'auto' ? 'cpu' : device
  const out = execFileSync(
    python,
    [join(__dirname, 'inference.py'), arch, String(BATCH), String(iterations), String(threads), torchDevice, precision, pixelKind],
    { encoding: 'utf8' },
  )
  return (JSON.parse(out.trim().split('\n').pop()!) as { imagesPerSecond: number }).imagesPerSecond
}

async function main(): Promise<void> {
  console.log(`inference, batch ${BATCH}, ${pixelKind} pixels, device ${device}, ${precision}, ${threads} threads (${cpus()[0]?.model ?? 'unknown CPU'})`)
  console.log('arch                  iters   ours img/s   PyTorch img/s   ours/PyTorch   JS ms/call')
  for (const arch of archs) {
    const iterations = process.env.ITERS ? Number(process.env.ITERS) : ITERATIONS[arch]
    const a = await ours(arch, iterations)
    const b = pytorch(arch, iterations)
    console.log(
      `${arch.padEnd(22)}${String(iterations).padStart(5)}${a.imagesPerSecond.toFixed(1).padStart(13)}${b.toFixed(1).padStart(16)}${(a.imagesPerSecond / b).toFixed(2).padStart(15)}${a.jsMs.toFixed(2).padStart(13)}`,
    )
  }
}

void main()
