// Packed datasets in the core: a .npy read on demand and gathered natively (byte-exact against
// numpy, bounded RSS on a sparse 40 GB file), augmentation on the device with the sharp
// path's options and draws, and Trainer.fit on a packed dataset.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync } from 'node:fs'
import { open, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BatchLoader, DataError, FaceNet, NpyDataset, packImageFolder, SequentialSampler, Trainer } from '../src'
import { mappedImages, npyHeader } from '../src/data/npy'
import { drawTransform } from '../src/data/preprocess'
import { Rng } from '../src/rng'
import { LFW_IDENTITIES as IDENTITIES } from '../scripts/reliability-train'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `facenet-packed-${tag}-`))
const py = (code: string, ...args: string[]) => execFileSync(python, ['-c', code, ...args], { encoding: 'utf8' }).trim()

test('a numpy-written uint8 .npy is read on demand, and gathered rows are byte-exact against numpy fancy indexing', async (t) => {
  const dir = tmp('numpy')
  const images = join(dir, 'images.npy')
  const names = join(dir, 'names.npy')
  const picked = [5, 0, 36, 5, 17]
  py(
    'import sys, numpy as np; r = np.random.default_rng(3); a = r.integers(0, 256, (37, 20, 24, 3), dtype=np.uint8); ' +
      'np.save(sys.argv[1], a); np.save(sys.argv[2], np.array(["p%d" % (i % 4) for i in range(37)])); ' +
      'open(sys.argv[3], "wb").write(a[[5, 0, 36, 5, 17]].tobytes())',
    images,
    names,
    join(dir, 'picked.bin'),
  )
  const ds = await NpyDataset.open({ images, names })
  t.true(ds.mapped)
  t.is(ds.length, 37)
  const batch = await mappedImages(ds)!.gather(Int32Array.from(picked), false)
  t.deepEqual(batch.shape, [5, 20, 24, 3])
  const expected = readFileSync(join(dir, 'picked.bin'))
  t.true(Buffer.from(batch.pixels()).equals(expected))
  const one = await ds.input(36)
  t.true(one.kind === 'raw' && Buffer.from(one.data).equals(expected.subarray(2 * 1440, 3 * 1440)))
  await t.throwsAsync(mappedImages(ds)!.gather(Int32Array.of(37), false), { message: /out of range 0\.\.36/ })
})

test('a packed folder round-trips: the core gathers exactly the bytes numpy loads', async (t) => {
  const src = tmp('src')
  for (const name of IDENTITIES.slice(0, 2)) cpSync(join(root, 'data', 'lfw', name), join(src, name), { recursive: true })
  const out = tmp('pack')
  const result = await packImageFolder(src, out, { size: 40 })
  const ds = await NpyDataset.open({ images: result.images, names: result.names })
  t.true(ds.mapped)
  const order = Int32Array.from({ length: ds.length }, (_, i) => (i * 7) % ds.length)
  const gathered = (await mappedImages(ds)!.gather(order, false)).pixels()
  const sha = (await import('node:crypto')).createHash('sha256').update(gathered).digest('hex')
  const numpy = py('import sys, hashlib, numpy as np; a = np.load(sys.argv[1]); print(hashlib.sha256(a[[int(i) for i in sys.argv[2].split(",")]].tobytes()).hexdigest())', result.images, [...order].join(','))
  t.is(sha, numpy)
})

test('a sparse 40 GB .npy opens without being read and gathers rows with the RSS bounded', async (t) => {
  const dir = tmp('sparse')
  const images = join(dir, 'images.npy')
  const names = join(dir, 'names.npy')
  const plane = 160 * 160 * 3
  const count = Math.ceil(40e9 / plane)
  const header = npyHeader('|u1', [count, 160, 160, 3])
  const file = await open(images, 'w')
  await file.write(header, 0, header.length, 0)
  await file.truncate(header.length + count * plane)
  await file.close()
  py('import sys, numpy as np; np.save(sys.argv[1], np.array(["a", "b"] * (int(sys.argv[2]) // 2)))', names, String(count))
  // Load the addon before the baseline, so only the dataset is measured.
  await import('../src/binding')
  const before = process.memoryUsage().rss
  const ds = await NpyDataset.open({ images, names })
  t.true(ds.mapped)
  t.is(ds.length, count)
  const batch = await mappedImages(ds)!.gather(Int32Array.of(0, count - 1, count >> 1, 12345), false)
  t.true(batch.pixels().every((v) => v === 0))
  const grown = (process.memoryUsage().rss - before) / 2 ** 20
  t.true(grown < 200, `RSS grew by ${grown.toFixed(0)} MB for a ${(header.length + count * plane) / 1e9} GB file`)
})

test('a float .npy over 2 GiB is a DataError that says only uint8 C-order files are read on demand', async (t) => {
  const dir = tmp('big-float')
  const images = join(dir, 'images.npy')
  const count = 8000
  const header = npyHeader('<f4', [count, 160, 160, 3])
  const file = await open(images, 'w')
  await file.write(header, 0, header.length, 0)
  await file.truncate(header.length + count * 160 * 160 * 3 * 4)
  await file.close()
  const names = join(dir, 'names.npy')
  py('import sys, numpy as np; np.save(sys.argv[1], np.array(["a"] * 8000))', names)
  const error = await t.throwsAsync(NpyDataset.open({ images, names }), { instanceOf: DataError })
  t.is(error!.file, images)
  t.regex(error!.message, /GiB of <f4; only uint8 C-order \.npy files are read from the file on demand/)
})

/** n square images with a horizontal ramp (R = column), as uint8 (mapped) and as its in-memory float32 twin. */
async function rampDatasets(n = 3, side = 32): Promise<{ mapped: NpyDataset; inMemory: NpyDataset; pixels: Buffer }> {
  const dir = tmp('ramp')
  const [h, w] = [side, side]
  const pixels = Buffer.alloc(n * h * w * 3)
  for (let i = 0; i < n * h * w; i++) {
    pixels[i * 3] = ((i % w) * 256) / w
    pixels[i * 3 + 1] = (Math.floor(i / w) % h) * 3 + 7 * Math.floor(i / (h * w))
    pixels[i * 3 + 2] = (40 * Math.floor(i / (h * w))) % 256
  }
  await writeFile(join(dir, 'u8.npy'), Buffer.concat([npyHeader('|u1', [n, h, w, 3]), pixels]))
  await writeFile(join(dir, 'f32.npy'), Buffer.concat([npyHeader('<f4', [n, h, w, 3]), Buffer.from(Float32Array.from(pixels).buffer)]))
  const names = join(dir, 'names.npy')
  py('import sys, numpy as np; np.save(sys.argv[1], np.array(["abc"[i % 3] for i in range(int(sys.argv[2]))]))', names, String(n))
  const mapped = await NpyDataset.open({ images: join(dir, 'u8.npy'), names })
  const inMemory = await NpyDataset.open({ images: join(dir, 'f32.npy'), names })
  return { mapped, inMemory, pixels }
}

test('augmentation on the device draws what the sharp path draws: a flip flips, byte for byte, from the same seed', async (t) => {
  const { mapped, inMemory, pixels } = await rampDatasets()
  t.true(mapped.mapped)
  t.false(inMemory.mapped)
  const augment = { cropScale: 1, flip: true }
  // A seed that flips some of the three images and keeps some, so both kinds are checked.
  const flips = (seed: number) => {
    const rng = new Rng(seed, 0, 0)
    return [0, 1, 2].map(() => drawTransform(rng, { ...augment, maxRotation: 0, brightness: 0 }).flip)
  }
  let seed = 0
  while (flips(seed).every((f) => f === flips(seed)[0])) seed++
  const transform = { augment: { cropScale: 1, flip: true, maxRotation: 0, brightness: 0 }, centerCrop: 1, fit: 'cover' as const, seed, epoch: 0, batch: 0 }
  const ours = (await mappedImages(mapped)!.gather(Int32Array.of(0, 1, 2), false, { transform, height: 32, width: 32 })).pixels()
  const loader = new BatchLoader(inMemory, { size: { height: 32, width: 32 }, sampler: new SequentialSampler(inMemory, 3), augment, seed })
  let sharp: Uint8Array | undefined
  for await (const batch of loader) sharp = batch.pixels
  t.true(Buffer.from(ours).equals(Buffer.from(sharp!)))
  const plane = 32 * 32 * 3
  const flipped = [0, 1, 2].map((i) => ours[i * plane] !== pixels[i * plane])
  t.deepEqual(flipped, flips(seed))
  for (const i of [0, 1, 2]) {
    if (!flipped[i]) continue
    // The red ramp runs right to left.
    t.is(ours[i * plane], pixels[i * plane + 31 * 3])
  }
})

test('random resized crops on the device stay close to the sharp path from the same seed', async (t) => {
  const { mapped, inMemory } = await rampDatasets()
  const options = { cropScale: 0.6, flip: true, maxRotation: 0, brightness: 0.2 }
  const mean = async (seed: number): Promise<Uint8Array> => (await mappedImages(mapped)!.gather(Int32Array.of(0, 1, 2), false, { transform: { augment: options, centerCrop: 1, fit: 'cover', seed, epoch: 0, batch: 0 }, height: 16, width: 16 })).pixels()
  const ours = await mean(4)
  const loader = new BatchLoader(inMemory, { size: { height: 16, width: 16 }, sampler: new SequentialSampler(inMemory, 3), augment: options, seed: 4 })
  let sharp: Uint8Array | undefined
  for await (const batch of loader) sharp = batch.pixels
  const diff = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]!), 0) / a.length
  const other = await mean(5)
  // Downscales only (32 → at most 27): libvips shifts upscales by half a pixel. Resampling
  // still differs (bilinear here, libvips' kernels there); another seed's crops differ far more.
  t.true(diff(ours, sharp!) < 2, `mean |ours − sharp| = ${diff(ours, sharp!).toFixed(2)}`)
  t.true(diff(ours, other) > 3 * diff(ours, sharp!), `another seed: ${diff(ours, other).toFixed(2)}`)
})

test('Trainer.fit on a packed dataset trains on the pixels the sharp path gives (no augmentation), and repeats itself', async (t) => {
  // tiny's input size, so that neither path resizes.
  const { mapped, inMemory } = await rampDatasets(9, 64)
  const losses = async (data: NpyDataset): Promise<number[]> => {
    const model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 2, threads: 1 })
    const trainer = new Trainer(model, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0, augment: false, seed: 3 })
    const seen: number[] = []
    await trainer.fit(data, { epochs: 3, onStep: (s) => seen.push(s.loss) })
    model.dispose()
    return seen
  }
  const packed = await losses(mapped)
  t.true(packed.length >= 3)
  const sharp = await losses(inMemory)
  t.is(sharp.length, packed.length)
  packed.forEach((loss, i) => t.true(Math.abs(loss - sharp[i]!) <= 1e-5, `step ${i + 1}: ${loss} vs ${sharp[i]}`))
  t.deepEqual(await losses(mapped), packed)
})
