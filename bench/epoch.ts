/**
 * Training on the shipped LFW including data loading: ours (Trainer.fit over an
 * ImageFolder of data/lfw: sharp decode, resize, random crop 0.875–1, flip, brightness
 * ±10%, P×K batches, semi-hard mining, triplet loss, AdaGrad) beside PyTorch
 * (bench/epoch.py: a DataLoader with 2 workers doing the same decode/resize/augment, and
 * the twin network doing the same step), for a fixed number of steps. The clock runs from
 * the folder scan to the end of the last step, model creation excluded on both sides.
 * Each run is a fresh process; runs alternate ours, PyTorch, ours, PyTorch…
 *
 * Run: npx tsx bench/epoch.ts [arch=nns2] [P=16] [K=4] [steps=20] [threads=1] [rounds=2]
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { type Arch, FaceNet, ImageFolder, Trainer } from '../src'

const root = resolve(__dirname, '..')
const lfw = join(root, 'data', 'lfw')
const python = process.env.FACENET_BENCH_PYTHON ?? readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

interface Run {
  images: number
  seconds: number
  imagesPerSecond: number
  dataWaitSeconds: number
  peak_mb: number
}

async function child(arch: Arch, p: number, k: number, steps: number, threads: number): Promise<void> {
  const model = await FaceNet.create({ arch, threads, seed: 0 })
  const trainer = new Trainer(model, {
    optimizer: 'adagrad',
    lr: 0.05,
    identitiesPerBatch: p,
    imagesPerIdentity: k,
    negativesPerBatch: 0,
    augment: { cropScale: 0.875, flip: true, brightness: 0.1 },
    seed: 0,
  })
  const start = performance.now()
  const folder = await ImageFolder.open(lfw)
  let images = 0
  let wait = 0
  const result = await trainer.fit(folder, {
    maxSteps: steps,
    epochs: 1000,
    onStep: (s) => {
      images += s.images
      wait += s.dataWaitMs / 1000
    },
  })
  const seconds = (performance.now() - start) / 1000
  if (result.steps !== steps) throw new Error(`ran ${result.steps} steps, expected ${steps}`)
  console.log(JSON.stringify({ images, seconds, imagesPerSecond: images / seconds, dataWaitSeconds: wait, peak_mb: process.resourceUsage().maxRSS / 1024 }))
  model.dispose()
}

const last = (out: string) => JSON.parse(out.trim().split('\n').pop()!) as Run
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

function main(): void {
  const [arch = 'nns2', p = '16', k = '4', steps = '20', threads = '1', rounds = '2'] = process.argv.slice(2)
  console.log(`LFW training incl. data loading: ${arch}, ${p}×${k}, ${steps} steps, ${threads} torch threads, ${cpus().length} CPUs; PyTorch DataLoader 2 workers`)
  const ours: Run[] = []
  const theirs: Run[] = []
  for (let r = 0; r < Number(rounds); r++) {
    ours.push(last(execFileSync(process.execPath, ['--import', 'tsx', __filename, '--child', arch, p, k, steps, threads], { encoding: 'utf8' })))
    theirs.push(last(execFileSync(python, [join(__dirname, 'epoch.py'), lfw, arch, p, k, steps, threads], { encoding: 'utf8' })))
    const [a, b] = [ours.at(-1)!, theirs.at(-1)!]
    console.log(
      `round ${r + 1}: ours ${a.imagesPerSecond.toFixed(1)} img/s (${a.seconds.toFixed(1)} s, data wait ${a.dataWaitSeconds.toFixed(1)} s, peak ${a.peak_mb.toFixed(0)} MB)` +
        `  PyTorch ${b.imagesPerSecond.toFixed(1)} img/s (${b.seconds.toFixed(1)} s, data wait ${b.dataWaitSeconds.toFixed(1)} s, peak ${b.peak_mb.toFixed(0)} MB)  ratio ${(a.imagesPerSecond / b.imagesPerSecond).toFixed(2)}`,
    )
  }
  const ratio = median(ours.map((a, i) => a.imagesPerSecond / theirs[i]!.imagesPerSecond))
  console.log(`median ours ${median(ours.map((x) => x.imagesPerSecond)).toFixed(1)} img/s, PyTorch ${median(theirs.map((x) => x.imagesPerSecond)).toFixed(1)} img/s, ours/PyTorch ${ratio.toFixed(2)}`)
  console.log(JSON.stringify({ bench: 'epoch', arch, p: Number(p), k: Number(k), steps: Number(steps), threads: Number(threads), ours, pytorch: theirs, ratio }))
}

if (process.argv[2] === '--child') {
  const [, , , arch, p, k, steps, threads] = process.argv
  void child(arch as Arch, Number(p), Number(k), Number(steps), Number(threads))
} else {
  main()
}
