/**
 * Images/s of the data pipeline on the shipped LFW (decode, resize, random crop, flip,
 * brightness jitter → uint8 N×H×W×3 batches), at 160×160 and 220×220, beside a PyTorch
 * DataLoader (2 workers, PIL) doing the same work in the same run.
 *
 * Run: npx tsx bench/pipeline.ts [images=3000] [batch=128]
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { BatchLoader, FaceNet, ImageFolder, SequentialSampler } from '../src'

const root = resolve(__dirname, '..')
const lfw = join(root, 'data', 'lfw')
const count = Number(process.argv[2] ?? 3000)
const batchSize = Number(process.argv[3] ?? 128)
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

async function ours(size: number): Promise<number> {
  const folder = await ImageFolder.open(lfw)
  const items = folder.subset(folder.identities)
  // The first `count` images in path order, as the PyTorch side takes.
  const source = { ...items, identities: items.identities, labels: items.labels.subarray(0, count), length: Math.min(count, items.length), input: (i: number) => items.input(i) }
  const loader = new BatchLoader(source, {
    size: { height: size, width: size },
    sampler: new SequentialSampler(source.labels, batchSize),
    augment: { cropScale: 0.875, flip: true, brightness: 0.1 },
    seed: 1,
  })
  let seen = 0
  const start = performance.now()
  for await (const batch of loader) seen += batch.shape[0]
  return seen / ((performance.now() - start) / 1000)
}

function torchLoader(size: number): number {
  const out = execFileSync(python, [join(__dirname, 'pipeline.py'), lfw, String(size), String(count), String(batchSize)], { encoding: 'utf8' })
  return (JSON.parse(out.trim().split('\n').pop()!) as { imagesPerSecond: number }).imagesPerSecond
}

/** How fast NN1 consumes 220×220 images in a forward pass here: an upper bound on training's rate. */
async function nn1Forward(): Promise<number | undefined> {
  try {
    using model = await FaceNet.create({ arch: 'nn1' })
    const n = 8
    const data = new Uint8Array(n * 220 * 220 * 3).fill(128)
    await model.embed({ data, shape: [n, 220, 220, 3] })
    const start = performance.now()
    for (let i = 0; i < 2; i++) await model.embed({ data, shape: [n, 220, 220, 3] })
    return (2 * n) / ((performance.now() - start) / 1000)
  } catch (error) {
    console.log(`(NN1 forward not measured: ${(error as Error).message})`)
    return undefined
  }
}

async function main(): Promise<void> {
  console.log(`data pipeline on LFW: ${count} images, batch ${batchSize}, augmentation (crop 0.875–1, flip, brightness ±10%)`)
  console.log(`CPUs ${cpus().length}, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE}`)
  console.log('size      facenet-torch img/s   PyTorch DataLoader(2 workers, PIL) img/s   ratio')
  let last220 = 0
  for (const size of [160, 220]) {
    await ours(size) // warm up the pool and the page cache
    // Interleaved, best of two each: the machine may be busy with other work.
    let a = 0
    let b = 0
    for (let rep = 0; rep < 2; rep++) {
      a = Math.max(a, await ours(size))
      b = Math.max(b, torchLoader(size))
    }
    if (size === 220) last220 = a
    console.log(`${size}×${size}   ${a.toFixed(0).padStart(10)}            ${b.toFixed(0).padStart(10)}                             ${(a / b).toFixed(2)}×`)
  }
  const forward = await nn1Forward()
  if (forward !== undefined) {
    console.log(`NN1 forward pass at 220×220 (batch 8): ${forward.toFixed(1)} img/s (training, forward + backward, is slower still)`)
    console.log(`pipeline at 220×220 / NN1 forward consumption: ${(last220 / forward).toFixed(1)}×`)
  }
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
