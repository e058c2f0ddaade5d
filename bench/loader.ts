/**
 * The loader alone: images/s of augmented 160×160 P×K batches from the shipped LFW, four
 * ways in one run, over the same batches (the same item indices, in the same order):
 *
 * - ours, packed: rows gathered from the memory-mapped images.npy by the core and
 *   augmented as one batch (affine_grid + grid_sample, brightness multiply) on the CPU;
 * - ours, sharp: the JPEGs decoded, resized and augmented image by image by libvips;
 * - a PyTorch DataLoader (2 workers) over the same images.npy (np.load mmap) and over the
 *   JPEGs (torchvision.io decode), with torchvision.transforms.v2 doing the same work.
 *
 * The augmentation is the LFW recipe's: crop side 0.875–1, flip, brightness ±10%.
 * LFW is packed once (160×160, cached in bench/.cache) with `packImageFolder`.
 *
 * Run: npx tsx bench/loader.ts [batches=20] [P=30] [K=4]
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { BatchLoader, ImageFolder, NpyDataset, packImageFolder, PKSampler, type BatchSampler, type SampledBatch } from '../src'
import { mappedImages } from '../src/data/npy'

const root = resolve(__dirname, '..')
const lfw = join(root, 'data', 'lfw')
const cache = join(__dirname, '.cache', 'lfw-160')
const batches = Number(process.argv[2] ?? 20)
const P = Number(process.argv[3] ?? 30)
const K = Number(process.argv[4] ?? 4)
const size = 160
const augment = { cropScale: 0.875, flip: true, maxRotation: 0, brightness: 0.1 }
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

/** The first `batches` P×K batches of the sampler's epochs, fixed, so every loader reads the same items. */
function fixedBatches(labels: Int32Array): SampledBatch[] {
  const sampler = new PKSampler(labels, { P, K, negatives: 0, seed: 1 })
  const out: SampledBatch[] = []
  while (out.length < batches) {
    for (const batch of sampler.epochBatches()) {
      out.push(batch)
      if (out.length === batches) break
    }
  }
  return out
}

const replay = (list: SampledBatch[]): BatchSampler => ({ epochBatches: () => list })

async function oursPacked(dataset: NpyDataset, list: SampledBatch[]): Promise<number> {
  const images = mappedImages(dataset)!
  const start = performance.now()
  let seen = 0
  // Two batches in flight, as the trainer's prefetch keeps them.
  const gather = (i: number) =>
    images.gather(list[i]!.indices, false, { transform: { augment, centerCrop: 1, fit: 'cover', seed: 1, epoch: list[i]!.epoch, batch: list[i]!.batch }, height: size, width: size })
  const pending = [gather(0), ...(list.length > 1 ? [gather(1)] : [])]
  for (let i = 0; i < list.length; i++) {
    const batch = await pending.shift()!
    if (i + 2 < list.length) pending.push(gather(i + 2))
    seen += batch.shape[0]!
  }
  return seen / ((performance.now() - start) / 1000)
}

async function oursSharp(folder: ImageFolder, list: SampledBatch[]): Promise<number> {
  const loader = new BatchLoader(folder, { size: { height: size, width: size }, sampler: replay(list), augment, seed: 1 })
  const start = performance.now()
  let seen = 0
  for await (const batch of loader) seen += batch.shape[0]
  return seen / ((performance.now() - start) / 1000)
}

function torch(mode: 'npy' | 'jpeg', source: string, batchFile: string): number {
  const out = execFileSync(python, [join(__dirname, 'loader.py'), mode, source, batchFile, String(size)], { encoding: 'utf8' })
  return (JSON.parse(out.trim().split('\n').pop()!) as { imagesPerSecond: number }).imagesPerSecond
}

async function main(): Promise<void> {
  if (!existsSync(join(cache, 'index.json'))) {
    mkdirSync(cache, { recursive: true })
    const started = performance.now()
    const packed = await packImageFolder(lfw, cache, { size })
    console.log(`packed ${packed.count} LFW images at ${size}×${size} in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  }
  const dataset = await NpyDataset.open({ images: join(cache, 'images.npy'), names: join(cache, 'names.npy') })
  const folder = await ImageFolder.open(lfw)
  // The pack keeps the folder's item order, so one index names the same image in both.
  if (dataset.length !== folder.length) throw new Error(`packed ${dataset.length} images but the folder has ${folder.length}`)
  const list = fixedBatches(dataset.labels)
  const batchFile = join(cache, 'bench-batches.json')
  writeFileSync(batchFile, JSON.stringify({ batches: list.map((b) => [...b.indices]), paths: folder.items.map((item) => item.path) }))
  const images = list.reduce((n, b) => n + b.indices.length, 0)
  console.log(`loader alone: ${batches} P×K batches (P ${P}, K ${K}; ${images} images) at ${size}×${size}, crop 0.875–1, flip, brightness ±10%`)
  console.log(`CPUs ${cpus().length}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
  await oursPacked(dataset, list) // warm the page cache and the thread pools
  await oursSharp(folder, list.slice(0, 2))
  const best = { packed: 0, sharp: 0, torchNpy: 0, torchJpeg: 0 }
  // Interleaved, best of two each: the machine is shared.
  for (let rep = 0; rep < 2; rep++) {
    best.packed = Math.max(best.packed, await oursPacked(dataset, list))
    best.sharp = Math.max(best.sharp, await oursSharp(folder, list))
    best.torchNpy = Math.max(best.torchNpy, torch('npy', join(cache, 'images.npy'), batchFile))
    best.torchJpeg = Math.max(best.torchJpeg, torch('jpeg', lfw, batchFile))
  }
  console.log('loader                                        img/s')
  console.log(`facenet-torch, packed (core gather + batched augment)   ${best.packed.toFixed(0).padStart(7)}`)
  console.log(`facenet-torch, sharp on JPEGs                            ${best.sharp.toFixed(0).padStart(7)}`)
  console.log(`PyTorch DataLoader (2 workers), same .npy                ${best.torchNpy.toFixed(0).padStart(7)}`)
  console.log(`PyTorch DataLoader (2 workers), JPEGs                    ${best.torchJpeg.toFixed(0).padStart(7)}`)
  console.log(`packed / sharp ${(best.packed / best.sharp).toFixed(1)}×, packed / PyTorch .npy ${(best.packed / best.torchNpy).toFixed(1)}×`)
  console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
