import test from 'ava'
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import sharp from 'sharp'
import {
  BatchLoader,
  DataError,
  ImageFolder,
  InvalidArgumentError,
  LfwPairs,
  NpyDataset,
  PKSampler,
  SequentialSampler,
  type ImageSource,
} from '../src'
import { drawTransform, preprocessImage } from '../src/data/preprocess'
import { Rng } from '../src/rng'
import { checkAugment } from '../src/data/preprocess'

const LFW = resolve(__dirname, '..', 'data', 'lfw')
const NPY = resolve(__dirname, 'fixtures', 'npy')
const SAMPLE = join(LFW, 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg')

let tmp: string
test.before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'facenet-data-'))
})
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true })
})

/** A small dataset folder built from LFW bytes plus PNG/WebP/grayscale conversions. */
async function makeFolder(name: string, extra: (root: string) => Promise<void> = async () => {}): Promise<string> {
  const root = join(tmp, name)
  const jpg = await readFile(SAMPLE)
  for (const [id, files] of Object.entries({ Bob: ['Bob_0001.jpg', 'Bob_0002.png'], Alice: ['Alice_0001.webp', 'Alice_0002.jpg', 'Alice_0003.jpg'], Carol: ['Carol_0001.png'] })) {
    await mkdir(join(root, id), { recursive: true })
    for (const f of files) {
      const img = sharp(jpg)
      const bytes = f.endsWith('.png') ? await img.grayscale().png().toBuffer() : f.endsWith('.webp') ? await img.webp().toBuffer() : jpg
      await writeFile(join(root, id, f), bytes)
    }
  }
  await writeFile(join(root, 'Bob', 'notes.txt'), 'not an image, and ignored by extension')
  await writeFile(join(root, 'pairs.txt'), 'files at the root are ignored')
  await extra(root)
  return root
}

const quiet = { onWarning: () => {} }

// 1. ImageFolder

test('ImageFolder lists identities sorted, counts, items and labels (JPEG, PNG, WebP)', async (t) => {
  const root = await makeFolder('folder-ok')
  const ds = await ImageFolder.open(root)
  t.deepEqual(ds.identities, ['Alice', 'Bob', 'Carol'])
  t.deepEqual([...ds.counts], [3, 2, 1])
  t.deepEqual(ds.items.map((i) => [i.identity, i.label, i.path.slice(root.length + 1)]), [
    ['Alice', 0, 'Alice/Alice_0001.webp'],
    ['Alice', 0, 'Alice/Alice_0002.jpg'],
    ['Alice', 0, 'Alice/Alice_0003.jpg'],
    ['Bob', 1, 'Bob/Bob_0001.jpg'],
    ['Bob', 1, 'Bob/Bob_0002.png'],
    ['Carol', 2, 'Carol/Carol_0001.png'],
  ])
  const min2 = await ImageFolder.open(root, { minImagesPerIdentity: 2 })
  t.deepEqual(min2.identities, ['Alice', 'Bob'])
  // Carol has only a PNG, so with JPEG only her folder counts as empty.
  await t.throwsAsync(ImageFolder.open(root, { extensions: ['JPG'] }), { instanceOf: DataError, message: /Carol: identity folder has no images/ })
  const jpgOnly = await ImageFolder.open(root, { extensions: ['JPG'], onBadImage: 'skip', ...quiet })
  t.deepEqual([...jpgOnly.counts], [2, 1])
  t.is(jpgOnly.skipped.length, 1)
  const sub = ds.subset(['Carol', 'Bob'])
  t.deepEqual(sub.identities, ['Bob', 'Carol'])
  t.deepEqual([...sub.labels], [0, 0, 1])
  t.throws(() => ds.subset(['Nobody']), { instanceOf: InvalidArgumentError })
})

test('ImageFolder opens the shipped LFW deterministically', async (t) => {
  const [a, b] = await Promise.all([ImageFolder.open(LFW), ImageFolder.open(LFW)])
  t.is(a.identities.length, 4281)
  t.is(a.length, 7701)
  t.deepEqual(a.items, b.items)
  t.is(a.counts.reduce((s, c) => s + c, 0), 7701)
  const multi = await ImageFolder.open(LFW, { minImagesPerIdentity: 2 })
  t.true(multi.identities.length < 4281 && multi.identities.length > 1000)
  t.true([...multi.counts].every((c) => c >= 2))
})

// 2. NpyDataset

test('NpyDataset reads numpy-written uint8/float32/float64 arrays in C and Fortran order', async (t) => {
  const expected = await readFile(join(NPY, 'expected_u8.bin'))
  for (const file of ['images_u8', 'images_u8_fortran', 'images_f32', 'images_f64_fortran']) {
    const ds = await NpyDataset.open({ images: join(NPY, `${file}.npy`), names: join(NPY, 'names.npy') })
    t.is(ds.length, 5)
    t.is(ds.height, 4)
    t.is(ds.width, 6)
    t.deepEqual(ds.names, ['Alice', 'Bob', 'Alice', 'Zoë', 'Bob'])
    t.deepEqual(ds.identities, ['Alice', 'Bob', 'Zoë'])
    t.deepEqual([...ds.labels], [0, 1, 0, 2, 1])
    for (let i = 0; i < 5; i++) {
      const input = await ds.input(i)
      t.true(input.kind === 'raw' && Buffer.from(input.data).equals(expected.subarray(i * 72, (i + 1) * 72)), `${file}[${i}]`)
    }
  }
})

test('NpyDataset errors name the file: malformed header, shape/dtype mismatch, truncated data', async (t) => {
  const names = join(NPY, 'names.npy')
  const good = await readFile(join(NPY, 'images_u8.npy'))
  const write = async (name: string, bytes: Buffer) => {
    const p = join(tmp, name)
    await writeFile(p, bytes)
    return p
  }
  const cases: [string, Promise<unknown>, RegExp][] = []
  const truncated = await write('truncated.npy', good.subarray(0, good.length - 10))
  cases.push([truncated, NpyDataset.open({ images: truncated, names }), /truncated data/])
  const extra = await write('extra.npy', Buffer.concat([good, Buffer.from([1, 2])]))
  cases.push([extra, NpyDataset.open({ images: extra, names }), /unexpected bytes/])
  const badMagic = await write('magic.npy', Buffer.concat([Buffer.from('GIF89a'), good.subarray(6)]))
  cases.push([badMagic, NpyDataset.open({ images: badMagic, names }), /bad magic/])
  const header = good.subarray(10, 10 + good.readUInt16LE(8)).toString('latin1')
  const mangled = Buffer.from(good)
  mangled.write(header.replace("'shape'", "'shope'"), 10, 'latin1')
  const badHeader = await write('header.npy', mangled)
  cases.push([badHeader, NpyDataset.open({ images: badHeader, names }), /malformed \.npy header/])
  const badShape = join(NPY, 'images_bad_shape.npy')
  cases.push([badShape, NpyDataset.open({ images: badShape, names }), /shape \(N, H, W, 3\)/])
  const i16 = join(NPY, 'images_i16.npy')
  cases.push([i16, NpyDataset.open({ images: i16, names }), /uint8, float32 or float64/])
  const short = join(NPY, 'names_short.npy')
  cases.push([short, NpyDataset.open({ images: join(NPY, 'images_u8.npy'), names: short }), /4 names but .* 5 images/])
  const object = join(NPY, 'names_object.npy')
  cases.push([object, NpyDataset.open({ images: join(NPY, 'images_u8.npy'), names: object }), /object arrays/])
  for (const [file, promise, message] of cases) {
    const error = await t.throwsAsync(promise, { instanceOf: DataError, message })
    t.is(error?.code, 'ERR_DATA')
    t.is(error?.file, file)
    t.true(error?.message.includes(file))
  }
})

// 3. LfwPairs

test('LfwPairs parses the shipped View 2 pairs.txt into 10 disjoint folds', async (t) => {
  const pairs = await LfwPairs.parse(join(LFW, 'pairs.txt'))
  t.is(pairs.folds.length, 10)
  for (const fold of pairs.folds) {
    t.is(fold.pairs.length, 600)
    t.is(fold.pairs.filter((p) => p.same).length, 300)
    t.true(fold.pairs.slice(0, 300).every((p) => p.same && p.identityA === p.identityB))
  }
  const first = pairs.folds[0]!.pairs[0]!
  t.is(first.a, join(LFW, 'Abel_Pacheco', 'Abel_Pacheco_0001.jpg'))
  t.is(first.b, join(LFW, 'Abel_Pacheco', 'Abel_Pacheco_0004.jpg'))
  t.is(pairs.imagePaths().length, 7701)
  const { trainIdentities, test: fold3 } = pairs.unrestrictedSplit(3)
  const held = new Set(fold3.identities)
  t.true(trainIdentities.every((id) => !held.has(id)))
  const union = new Set(pairs.folds.flatMap((f, i) => (i === 3 ? [] : f.identities)))
  t.deepEqual(trainIdentities, [...union].sort())
  // Training on the nine folds with ImageFolder.subset works on the shipped data.
  const train = (await ImageFolder.open(LFW)).subset(trainIdentities)
  t.is(train.identities.length, trainIdentities.length)
})

test('LfwPairs reads View 1 files and rejects malformed lines and escaping paths', async (t) => {
  const root = join(tmp, 'view1')
  await mkdir(root)
  const view1 = join(root, 'pairsDevTest.txt')
  await writeFile(view1, '2\nA 1 2\nB 1 3\nA 1 B 2\nB 3 A 2\n')
  const pairs = await LfwPairs.parse(view1, { checkImages: false })
  t.is(pairs.folds.length, 1)
  t.deepEqual(pairs.folds[0]!.pairs.map((p) => p.same), [true, true, false, false])
  t.deepEqual(pairs.folds[0]!.identities, ['A', 'B'])
  t.is(pairs.folds[0]!.pairs[3]!.b, join(root, 'A', 'A_0002.jpg'))

  const bad = join(root, 'bad.txt')
  await writeFile(bad, '1\nA 1 x\nA 1 B 2\n')
  await t.throwsAsync(LfwPairs.parse(bad, { checkImages: false }), { instanceOf: DataError, message: /bad\.txt: line 2: an image number/ })
  await writeFile(bad, '1\n.. 1 2\nA 1 B 2\n')
  await t.throwsAsync(LfwPairs.parse(bad, { checkImages: false }), { instanceOf: DataError, message: /invalid identity name/ })
  await writeFile(bad, '1\nA 1 2\n')
  await t.throwsAsync(LfwPairs.parse(bad, { checkImages: false }), { instanceOf: DataError, message: /expected 2 pair lines/ })
})

// 4. Preprocessing and augmentation

test('preprocessImage resizes to the input size, channels last, grayscale to 3 equal channels', async (t) => {
  for (const size of [{ height: 160, width: 160 }, { height: 140, width: 116 }]) {
    const data = await preprocessImage({ kind: 'file', path: SAMPLE }, size)
    t.is(data.length, size.height * size.width * 3)
  }
  const grayPath = join(tmp, 'gray.png')
  await sharp(SAMPLE).grayscale().png().toFile(grayPath)
  const gray = await preprocessImage({ kind: 'file', path: grayPath }, { height: 8, width: 8 })
  t.is(gray.length, 8 * 8 * 3)
  const { data: r } = await sharp(gray, { raw: { width: 8, height: 8, channels: 3 } }).extractChannel(0).raw().toBuffer({ resolveWithObject: true })
  const { data: b } = await sharp(gray, { raw: { width: 8, height: 8, channels: 3 } }).extractChannel(2).raw().toBuffer({ resolveWithObject: true })
  t.true(r.equals(b))
})

test('augmentation is driven by the seed; a flip mirrors the image', async (t) => {
  const aug = checkAugment({ maxRotation: 8, brightness: 0.2 })
  const draw = (seed: number) => Array.from({ length: 4 }, (_, i, rng = new Rng(seed, i)) => drawTransform(rng, aug))
  t.deepEqual(draw(1), draw(1))
  t.notDeepEqual(draw(1), draw(2))
  const size = { height: 64, width: 64 }
  const input = { kind: 'file' as const, path: SAMPLE }
  const tr = draw(7)[0]!
  t.true((await preprocessImage(input, size, tr)).equals(await preprocessImage(input, size, tr)))
  const plain = await preprocessImage(input, size)
  const flipped = await preprocessImage(input, size, { scale: 1, x: 0, y: 0, flip: true, rotation: 0, brightness: 1 })
  const mirrored = await sharp(plain, { raw: { ...size, channels: 3 } }).flop().raw().toBuffer()
  t.true(flipped.equals(mirrored))
  t.false(flipped.equals(plain))
})

// 5. Sampler

function labelsOf(counts: number[]): Int32Array {
  return Int32Array.from(counts.flatMap((c, label) => Array<number>(c).fill(label)))
}

test('PKSampler: P identities × up to K images in every batch, singles only as negatives, one epoch visits every identity', (t) => {
  const counts = [5, 2, 1, 7, 1, 3, 1, 4]
  const labels = labelsOf(counts)
  const sampler = new PKSampler(labels, { P: 2, K: 3, negatives: 2, seed: 5 })
  t.is(sampler.anchorIdentities, 5)
  t.is(sampler.batchesPerEpoch, 3)
  const seen: number[] = []
  const batches = [...sampler.epochBatches()]
  t.is(batches.length, 3)
  for (const batch of batches) {
    const perLabel = new Map<number, number>()
    for (const l of batch.labels) perLabel.set(l, (perLabel.get(l) ?? 0) + 1)
    const anchors = [...perLabel.keys()].filter((l) => counts[l]! >= 2)
    const singles = [...perLabel.keys()].filter((l) => counts[l] === 1)
    t.is(anchors.length, 2)
    for (const l of anchors) t.is(perLabel.get(l), Math.min(3, counts[l]!))
    t.is(singles.length, 2)
    t.deepEqual([...batch.labels], [...batch.indices].map((i) => labels[i]!))
    t.is(new Set(batch.indices).size, batch.indices.length)
    seen.push(...anchors)
  }
  // 5 identities in batches of 2: the last batch tops up with one from the epoch's start.
  t.is(seen.length, 6)
  t.deepEqual([...new Set(seen)].sort(), [0, 1, 3, 5, 7])
  t.is(sampler.next().epoch, 1)
  t.throws(() => new PKSampler(labelsOf([1, 1])), { instanceOf: InvalidArgumentError })
})

test('PKSampler state()/restore() resumes exactly; a different sampler refuses the state', (t) => {
  const labels = labelsOf([6, 2, 1, 9, 1, 3, 4, 4, 2])
  const a = new PKSampler(labels, { P: 2, K: 4, seed: 11 })
  for (let i = 0; i < 4; i++) a.next()
  const saved = JSON.parse(JSON.stringify(a.state()))
  const expected = Array.from({ length: 6 }, () => [...a.next().indices])
  const b = new PKSampler(labels, { P: 2, K: 4, seed: 11 })
  b.restore(saved)
  t.deepEqual(Array.from({ length: 6 }, () => [...b.next().indices]), expected)
  const other = new PKSampler(labels, { P: 3, K: 4, seed: 11 })
  t.throws(() => other.restore(saved), { instanceOf: InvalidArgumentError, message: /P/ })
  const reseeded = new PKSampler(labels, { P: 2, K: 4, seed: 12 })
  t.notDeepEqual([...reseeded.next().indices], [...new PKSampler(labels, { P: 2, K: 4, seed: 11 }).next().indices])
})

// 6. Prefetch loader

test('BatchLoader yields contiguous N×H×W×3 batches with labels, deterministic for a seed', async (t) => {
  const folder = await ImageFolder.open(LFW)
  const train = folder.subset(folder.identities.slice(0, 60))
  const run = async () => {
    const sampler = new PKSampler(train, { P: 4, K: 3, negatives: 2, seed: 1 })
    const loader = new BatchLoader(train, { size: { height: 32, width: 40 }, sampler, augment: { maxRotation: 5, brightness: 0.1 }, seed: 3 })
    const out = []
    for await (const batch of loader) {
      out.push(batch)
      if (out.length === 3) break
    }
    return out
  }
  const [a, b] = [await run(), await run()]
  t.is(a.length, 3)
  for (const [i, batch] of a.entries()) {
    const n = batch.labels.length
    t.deepEqual(batch.shape, [n, 32, 40, 3])
    t.true(batch.pixels instanceof Uint8Array)
    t.is(batch.pixels.length, n * 32 * 40 * 3)
    t.is(batch.batch, i)
    t.deepEqual([...batch.labels], [...batch.indices].map((k) => train.labels[k]!))
    t.true(Buffer.from(batch.pixels).equals(Buffer.from(b[i]!.pixels)))
  }
})

test('BatchLoader applies backpressure and stops on AbortSignal', async (t) => {
  const folder = await ImageFolder.open(LFW)
  let requested = 0
  const counting: ImageSource = {
    identities: folder.identities,
    labels: folder.labels,
    length: folder.length,
    input: (i) => {
      requested++
      return folder.input(i)
    },
  }
  const sampler = new SequentialSampler(folder, 4)
  const controller = new AbortController()
  const loader = new BatchLoader(counting, { size: { height: 16, width: 16 }, sampler, prefetch: 2, signal: controller.signal })
  const it = loader[Symbol.asyncIterator]()
  const first = await it.next()
  t.false(first.done)
  // While batch 0 is held, at most `prefetch` more batches may be decoding.
  await new Promise((r) => setTimeout(r, 200))
  t.true(requested <= 4 * 3, `requested ${requested}`)
  t.true(requested >= 4 * 2)
  controller.abort(new Error('stop now'))
  await t.throwsAsync(it.next(), { message: 'stop now' })
  const before = requested
  await new Promise((r) => setTimeout(r, 100))
  t.true(requested - before <= 8)
})

// 7. Bad input

async function badFolder(name: string): Promise<{ root: string; files: Record<string, string> }> {
  const jpg = await readFile(SAMPLE)
  const files: Record<string, string> = {}
  const root = await makeFolder(name, async (root) => {
    await mkdir(join(root, 'Dave'))
    const put = async (key: string, file: string, bytes: Buffer | string) => {
      files[key] = join(root, 'Dave', file)
      await writeFile(files[key]!, bytes)
    }
    await put('good', 'Dave_0001.jpg', jpg)
    await put('zero', 'Dave_0002.jpg', Buffer.alloc(0))
    await put('truncated', 'Dave_0003.jpg', jpg.subarray(0, Math.floor(jpg.length / 2)))
    await put('corrupt', 'Dave_0004.jpg', Buffer.concat([jpg.subarray(0, 200), Buffer.alloc(3000, 0x5a)]))
    await put('text', 'Dave_0005.png', 'this is not a picture\n')
    files.unreadable = join(root, 'Dave', 'Dave_0006.jpg')
    await symlink(join(root, 'does-not-exist.jpg'), files.unreadable)
    files.empty = join(root, 'Empty')
    await mkdir(files.empty)
  })
  return { root, files }
}

test('bad input at open: zero-byte, unreadable files and empty identity folders error naming the file, or skip with warnings', async (t) => {
  const { root, files } = await badFolder('bad-open')
  const error = await t.throwsAsync(ImageFolder.open(root), { instanceOf: DataError })
  t.is(error?.code, 'ERR_DATA')
  t.is(error?.file, files.zero!)
  const warnings: DataError[] = []
  const ds = await ImageFolder.open(root, { onBadImage: 'skip', onWarning: (w) => warnings.push(w) })
  t.deepEqual(ds.skipped.map((s) => s.file).sort(), [files.empty, files.unreadable, files.zero].sort())
  t.is(warnings.length, 3)
  t.true(warnings.every((w) => w instanceof DataError && w.message.startsWith(w.file)))
  t.false(ds.identities.includes('Empty'))
  // verify: true decodes everything up front and finds the corrupt, truncated and non-image files too.
  const verified = await ImageFolder.open(root, { onBadImage: 'skip', verify: true, ...quiet })
  t.deepEqual(verified.skipped.map((s) => s.file).sort(), [files.corrupt, files.empty, files.text, files.truncated, files.unreadable, files.zero].sort())
  t.is(verified.counts[verified.identities.indexOf('Dave')], 1)
  const empty = join(tmp, 'only-empty')
  await mkdir(join(empty, 'Nobody'), { recursive: true })
  await t.throwsAsync(ImageFolder.open(empty), { instanceOf: DataError, message: /Nobody: identity folder has no images/ })
})

test('bad input while loading: corrupt, truncated and non-image files error naming the file, or are skipped and counted', async (t) => {
  const { root, files } = await badFolder('bad-load')
  const ds = await ImageFolder.open(root, { onBadImage: 'skip', ...quiet })
  const dave = ds.items.flatMap((item, i) => (item.identity === 'Dave' ? [i] : []))
  t.is(dave.length, 4)
  for (const key of ['truncated', 'corrupt', 'text'] as const) {
    const index = ds.items.findIndex((item) => item.path === files[key])
    const error = await t.throwsAsync(preprocessImage(ds.input(index), { height: 16, width: 16 }), { instanceOf: DataError })
    t.is(error?.file, files[key]!, key)
  }
  const sampler = new SequentialSampler(ds, 100)
  const strict = new BatchLoader(ds, { size: { height: 16, width: 16 }, sampler })
  const error = await t.throwsAsync(async () => {
    for await (const _ of strict) void _
  }, { instanceOf: DataError })
  t.true([files.truncated, files.corrupt, files.text].includes(error!.file))
  const warnings: DataError[] = []
  const lenient = new BatchLoader(ds, { size: { height: 16, width: 16 }, sampler: new SequentialSampler(ds, 100), onBadImage: 'skip', onWarning: (w) => warnings.push(w) })
  const batches = []
  for await (const batch of lenient) batches.push(batch)
  t.is(batches.length, 1)
  t.is(batches[0]!.shape[0], ds.length - 3)
  t.is(batches[0]!.pixels.length, (ds.length - 3) * 16 * 16 * 3)
  t.is(lenient.skipped.length, 3)
  t.is(warnings.length, 3)
  t.false([...batches[0]!.indices].some((i) => [files.truncated, files.corrupt, files.text].includes(ds.items[i]!.path)))
})

test('bad input in pairs: an image the pairs file needs is missing', async (t) => {
  const root = join(tmp, 'pairs-missing')
  await mkdir(join(root, 'A'), { recursive: true })
  await mkdir(join(root, 'B'), { recursive: true })
  const jpg = await readFile(SAMPLE)
  for (const f of ['A/A_0001.jpg', 'A/A_0002.jpg', 'B/B_0001.jpg']) await writeFile(join(root, f), jpg)
  const file = join(root, 'pairs.txt')
  await writeFile(file, '1 2\nA 1 2\nB 1 2\nA 1 B 1\nA 2 B 3\n')
  const error = await t.throwsAsync(LfwPairs.parse(file), { instanceOf: DataError })
  t.is(error?.file, join(root, 'B', 'B_0002.jpg'))
  const warnings: DataError[] = []
  const pairs = await LfwPairs.parse(file, { onBadImage: 'skip', onWarning: (w) => warnings.push(w) })
  t.is(pairs.skipped.length, 2)
  t.is(warnings.length, 2)
  t.deepEqual(pairs.folds[0]!.pairs.map((p) => [p.identityA, p.indexA, p.identityB, p.indexB]), [
    ['A', 1, 'A', 2],
    ['A', 1, 'B', 1],
  ])
})
