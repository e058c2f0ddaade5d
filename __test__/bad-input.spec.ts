/**
 * Bad input of every kind gets a coded error that names the value or the file; nothing
 * crashes or hangs. And security: weights are read as safetensors, dlib .dat or through the
 * core's restricted torch.save reader (which builds only tensors and plain containers, so
 * no pickle runs code), and names taken from a pairs file cannot reach outside the data root.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'
import {
  BatchLoader,
  DataError,
  FaceNet,
  type FaceNetError,
  ImageFolder,
  InvalidArgumentError,
  LfwPairs,
  NpyDataset,
  SequentialSampler,
  ShapeError,
  Trainer,
  UnknownArchError,
  WeightsError,
  type ImageSource,
} from '../src'
import { MAX_IMAGE_PIXELS, preprocessImage } from '../src/data/preprocess'
import { binding } from '../src/binding'
import { modelBinding } from '../src/model'

const ROOT = resolve(__dirname, '..')
const SAMPLE = join(ROOT, 'data', 'lfw', 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg')
const SIZE = { height: 16, width: 16 }

let tmp: string
let jpg: Buffer
let shared: Promise<FaceNet> | undefined
const tiny = () => (shared ??= FaceNet.create({ arch: 'tiny', embeddingDim: 16, device: 'cpu', threads: 1, seed: 2 }))

test.before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'facenet-input-'))
  jpg = await readFile(SAMPLE)
})
test.after.always(async () => {
  if (shared) (await shared).dispose()
  await rm(tmp, { recursive: true, force: true })
})

const rawSource = (count: number): ImageSource => ({
  identities: ['a', 'b'],
  labels: Int32Array.from({ length: count }, (_, i) => i % 2),
  length: count,
  input: (i) => ({ kind: 'raw', name: `image${i}`, data: Buffer.alloc(64 * 64 * 3, (i * 40) % 256), height: 64, width: 64 }),
})

// ── images ───────────────────────────────────────────────────────────────────

function pngChunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
  const out = Buffer.alloc(12 + data.length)
  out.writeUInt32BE(data.length, 0)
  body.copy(out, 4)
  out.writeUInt32BE(crc32(body), 8 + data.length)
  return out
}

/** A valid-looking PNG of a few dozen bytes whose header declares width×height pixels. */
function pngDeclaring(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr.set([8, 2, 0, 0, 0], 8) // 8-bit RGB
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(Buffer.alloc(64))), pngChunk('IEND', Buffer.alloc(0))])
}

/** The LFW sample JPEG with its frame header patched to declare width×height. */
function jpegDeclaring(width: number, height: number): Buffer {
  const bytes = Buffer.from(jpg)
  for (let i = 2; i < bytes.length - 9; ) {
    if (bytes[i] !== 0xff) throw new Error('not a marker')
    const marker = bytes[i + 1]!
    if (marker >= 0xc0 && marker <= 0xc2) {
      bytes.writeUInt16BE(height, i + 5)
      bytes.writeUInt16BE(width, i + 7)
      return bytes
    }
    i += 2 + bytes.readUInt16BE(i + 2)
  }
  throw new Error('no SOF marker')
}

test('decompression bombs: images declaring more than MAX_IMAGE_PIXELS are refused from the header, naming the file', async (t) => {
  t.is(MAX_IMAGE_PIXELS, 8192 * 8192)
  const bombs = {
    'png-100000x100000.png': pngDeclaring(100_000, 100_000),
    'png-8193x8192.png': pngDeclaring(8193, 8192),
    'jpeg-65000x65000.jpg': jpegDeclaring(65_000, 65_000),
  }
  for (const [name, bytes] of Object.entries(bombs)) {
    t.true(bytes.length < 10_000, `${name} is ${bytes.length} bytes`)
    const path = join(tmp, name)
    await writeFile(path, bytes)
    const rss = process.memoryUsage().rss
    const error = await t.throwsAsync(preprocessImage({ kind: 'file', path }, SIZE), { instanceOf: DataError })
    t.is(error?.file, path)
    t.regex(error!.message, /declares more than 67108864 pixels \(MAX_IMAGE_PIXELS/)
    // Refused before decoding: nothing near the declared size was allocated.
    t.true(process.memoryUsage().rss - rss < 256 * 1024 * 1024)
  }
  // At the limit is still an image (the PNG's pixel data is short, so it fails later, as corrupt).
  const edge = join(tmp, 'edge.png')
  await writeFile(edge, pngDeclaring(8192, 8192))
  const error = await t.throwsAsync(preprocessImage({ kind: 'file', path: edge }, SIZE), { instanceOf: DataError })
  t.notRegex(error!.message, /MAX_IMAGE_PIXELS/)
  // ImageFolder's verify pass reports the same.
  const root = join(tmp, 'bomb-folder')
  await mkdir(join(root, 'Bob'), { recursive: true })
  await writeFile(join(root, 'Bob', 'bomb.png'), bombs['png-100000x100000.png'])
  await writeFile(join(root, 'Bob', 'ok.jpg'), jpg)
  const ds = await ImageFolder.open(root, { verify: true, onBadImage: 'skip', onWarning: () => {} })
  t.deepEqual(ds.skipped.map((s) => s.file), [join(root, 'Bob', 'bomb.png')])
  t.regex(ds.skipped[0]!.reason, /MAX_IMAGE_PIXELS/)
})

test('corrupt, truncated and zero-length images are DataErrors naming the file', async (t) => {
  const cases = {
    'truncated.jpg': jpg.subarray(0, 600),
    'garbage.jpg': Buffer.concat([jpg.subarray(0, 4), Buffer.alloc(4000, 0xa5)]),
    'truncated.png': pngDeclaring(64, 64).subarray(0, 40),
    'empty.jpg': Buffer.alloc(0),
    'text.png': Buffer.from('hello'),
  }
  for (const [name, bytes] of Object.entries(cases)) {
    const path = join(tmp, name)
    await writeFile(path, bytes)
    const error = await t.throwsAsync(preprocessImage({ kind: 'file', path }, SIZE), { instanceOf: DataError }, name)
    t.is(error?.code, 'ERR_DATA')
    t.is(error?.file, path)
  }
})

// ── file names and folders ───────────────────────────────────────────────────

test('non-UTF-8 file and folder names: DataErrors that say so, or skipped', async (t) => {
  const root = join(tmp, 'non-utf8')
  await mkdir(join(root, 'Bob'), { recursive: true })
  await writeFile(join(root, 'Bob', 'ok.jpg'), jpg)
  const bytes = (...parts: (string | number[])[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : Buffer.from(p))))
  await writeFile(bytes(root, '/Bob/', [0xff, 0xfe], '.jpg'), jpg)
  await mkdir(bytes(root, '/', [0xc3, 0x28]))
  await writeFile(bytes(root, '/', [0xc3, 0x28], '/a.jpg'), jpg)
  const error = await t.throwsAsync(ImageFolder.open(root), { instanceOf: DataError })
  t.regex(error!.message, /not valid UTF-8/)
  const warnings: DataError[] = []
  const ds = await ImageFolder.open(root, { onBadImage: 'skip', onWarning: (w) => warnings.push(w) })
  t.deepEqual(ds.identities, ['Bob'])
  t.is(ds.length, 1)
  t.is(ds.skipped.length, 2)
  t.true(ds.skipped.every((s) => /not valid UTF-8/.test(s.reason)))
  t.is(warnings.length, 2)
})

test('symlink loops and FIFOs: DataErrors (ELOOP, not a regular file), no hang', async (t) => {
  const root = join(tmp, 'loops')
  await mkdir(join(root, 'Bob'), { recursive: true })
  await writeFile(join(root, 'Bob', 'ok.jpg'), jpg)
  await symlink('self.jpg', join(root, 'Bob', 'self.jpg'))
  await symlink('b', join(root, 'a'))
  await symlink('a', join(root, 'b'))
  await symlink(root, join(root, 'Bob', 'root.jpg'))
  await symlink(root, join(root, 'Recursive'))
  execFileSync('mkfifo', [join(root, 'Bob', 'pipe.jpg')])
  const error = await t.throwsAsync(ImageFolder.open(root), { instanceOf: DataError })
  t.regex(error!.message, /ELOOP|not a regular file/)
  const ds = await ImageFolder.open(root, { onBadImage: 'skip', verify: true, onWarning: () => {} })
  t.deepEqual(ds.identities, ['Bob'], 'symlinked folders are not followed as identities')
  t.deepEqual(ds.items.map((i) => i.path), [join(root, 'Bob', 'ok.jpg')])
  const reasons = Object.fromEntries(ds.skipped.map((s) => [s.file.slice(root.length + 1), s.reason]))
  t.regex(reasons['Bob/self.jpg']!, /ELOOP/)
  t.regex(reasons['Bob/pipe.jpg']!, /not a regular file/)
  t.regex(reasons['Bob/root.jpg']!, /not a regular file/)
  const loop = await t.throwsAsync(preprocessImage({ kind: 'file', path: join(root, 'Bob', 'self.jpg') }, SIZE), { instanceOf: DataError })
  t.regex(loop!.message, /ELOOP/)
})

test('unreadable folders: DataErrors naming them (checked as an unprivileged user when run as root)', async (t) => {
  const root = join(tmp, 'unreadable')
  await mkdir(join(root, 'Bob'), { recursive: true })
  await mkdir(join(root, 'Locked'))
  await writeFile(join(root, 'Bob', 'ok.jpg'), jpg)
  await writeFile(join(root, 'Locked', 'x.jpg'), jpg)
  await chmod(join(root, 'Locked'), 0o000)
  const script = join(tmp, 'open-unreadable.ts')
  const imageFolder = JSON.stringify(join(ROOT, 'src', 'data', 'image-folder'))
  await writeFile(
    script,
    `import { ImageFolder } from ${imageFolder}
const report = (e: any) => ({ name: e.constructor.name, code: e.code, file: e.file, message: e.message })
;(async () => {
  const out: any = {}
  try { await ImageFolder.open(${JSON.stringify(root)}); out.strict = 'opened' } catch (e) { out.strict = report(e) }
  try { out.skip = (await ImageFolder.open(${JSON.stringify(root)}, { onBadImage: 'skip', onWarning: () => {} })).skipped } catch (e) { out.skip = report(e) }
  try { await ImageFolder.open(${JSON.stringify(join(root, 'Locked'))}); out.rootLocked = 'opened' } catch (e) { out.rootLocked = report(e) }
  console.log(JSON.stringify(out))
})()
`,
  )
  // root reads any folder whatever its mode, so the check runs as 'nobody' in a child.
  const asRoot = process.getuid?.() === 0
  if (asRoot) {
    for (const dir of [tmp, root, join(root, 'Bob')]) await chmod(dir, 0o755)
    await chmod(script, 0o644)
  }
  const out = JSON.parse(
    execFileSync(process.execPath, ['--import=tsx', script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HOME: tmp }, ...(asRoot ? { uid: 65534, gid: 65534 } : {}) }),
  )
  t.log(asRoot ? 'ran as uid 65534 (the tests run as root, which chmod cannot lock out)' : 'ran as the current user')
  const locked = join(root, 'Locked')
  t.like(out.strict, { name: 'DataError', code: 'ERR_DATA', file: locked })
  t.regex(out.strict.message, /cannot read the identity folder \(EACCES\)/)
  t.deepEqual(out.skip.map((s: { file: string }) => s.file), [locked])
  t.like(out.rootLocked, { name: 'DataError', code: 'ERR_DATA', file: locked })
  t.regex(out.rootLocked.message, /EACCES/)
})

// ── .npy ─────────────────────────────────────────────────────────────────────

function npy(header: string, data: Buffer, lyingLength?: number): Buffer {
  let h = header
  while ((10 + h.length + 1) % 64 !== 0) h += ' '
  h += '\n'
  const prefix = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, 0, 0])
  prefix.writeUInt16LE(lyingLength ?? h.length, 8)
  return Buffer.concat([prefix, Buffer.from(h, 'latin1'), data])
}

test('.npy with a lying header, a negative or huge shape, or truncated: DataErrors naming the file, nothing allocated', async (t) => {
  const names = join(tmp, 'names.npy')
  await writeFile(names, npy("{'descr': '|S1', 'fortran_order': False, 'shape': (1,), }", Buffer.from('a')))
  const cases: [string, Buffer, RegExp][] = [
    ['lying-shape.npy', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (10, 64, 64, 3), }", Buffer.alloc(64 * 64 * 3)), /truncated data: shape \(10, 64, 64, 3\) of \|u1 needs 122880 bytes, file has 12288/],
    ['lying-length.npy', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", Buffer.alloc(12), 60_000), /truncated \.npy header: needs 60010 bytes/],
    ['negative.npy', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (-1, 2, 2, 3), }", Buffer.alloc(12)), /expected a non-negative integer in shape/],
    ['huge.npy', npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 9999999999, 2, 3), }", Buffer.alloc(48)), /truncated data/],
    ['overflow.npy', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (999999999999999999999999999999, 1, 1, 3), }", Buffer.alloc(3)), /truncated data/],
    ['truncated.npy', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", Buffer.alloc(12)).subarray(0, 40), /truncated \.npy header/],
    ['magic-only.npy', Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]), /not an \.npy file/],
    ['pickle.npy', npy("{'descr': '|O', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", Buffer.alloc(12)), /object arrays are pickles/],
  ]
  for (const [name, bytes, message] of cases) {
    const path = join(tmp, name)
    await writeFile(path, bytes)
    const error = await t.throwsAsync(NpyDataset.open({ images: path, names }), { instanceOf: DataError, message }, name)
    t.is(error?.file, path, name)
  }
  // Names that are not Unicode code points.
  const images = join(tmp, 'one-image.npy')
  await writeFile(images, npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", Buffer.alloc(12)))
  const badNames = join(tmp, 'bad-names.npy')
  const code = Buffer.alloc(4)
  code.writeUInt32LE(0x7fffffff)
  await writeFile(badNames, npy("{'descr': '<U1', 'fortran_order': False, 'shape': (1,), }", code))
  const error = await t.throwsAsync(NpyDataset.open({ images, names: badNames }), { instanceOf: DataError })
  t.is(error?.file, badNames)
  t.regex(error!.message, /2147483647, which is not a Unicode code point/)
})

// ── pairs.txt ────────────────────────────────────────────────────────────────

test('malformed pairs.txt: DataErrors naming the file and line', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /line 1: the number of pairs must be a positive integer, got ""/],
    ['10 300 7\n', /line 1: header must be/],
    ['x 3\n', /line 1: the number of folds must be a positive integer, got "x"/],
    ['0 1\n', /the number of folds must be a positive integer, got "0"/],
    ['1 1\nA 1 2\n', /expected 2 pair lines .* found 1/],
    ['1 1\nA 1 2\nA 1 B 2\nC 1 2\n', /expected 2 pair lines .* found 3/],
    ['1 1\nA 1\nA 1 B 2\n', /line 2: a matched pair is "name i j"/],
    ['1 1\nA 1 2\nA 1 B\n', /line 3: a mismatched pair is "name1 i name2 j"/],
    ['1 1\nA 1 -2\nA 1 B 2\n', /line 2: an image number must be a positive integer, got "-2"/],
    ['1 1\nA 1 0x2\nA 1 B 2\n', /an image number must be a positive integer, got "0x2"/],
    ['1 1\nA 1 2\nA 1 B 1e3\n', /got "1e3"/],
    ['99999999999999999999 99999999999999999999\n', /expected .* pair lines/],
  ]
  for (const [i, [text, message]] of cases.entries()) {
    const file = join(tmp, `pairs-${i}.txt`)
    await writeFile(file, text)
    const error = await t.throwsAsync(LfwPairs.parse(file, { checkImages: false }), { instanceOf: DataError, message }, JSON.stringify(text))
    t.is(error?.file, file)
  }
  const missing = await t.throwsAsync(LfwPairs.parse(join(tmp, 'nope.txt')), { instanceOf: DataError, message: /cannot be read \(ENOENT\)/ })
  t.is(missing?.file, join(tmp, 'nope.txt'))
})

test('security: names in a pairs file cannot reach outside the data root', async (t) => {
  const root = join(tmp, 'jail')
  await mkdir(root, { recursive: true })
  const file = join(root, 'pairs.txt')
  for (const name of ['..', '.', '../etc', '/etc/passwd', '..\\..\\x', 'a/b', 'a\0b']) {
    const error = await t.throwsAsync(LfwPairs.fromText(`1\n${name} 1 2\nA 1 B 2\n`, file, { checkImages: false }), { instanceOf: DataError })
    t.regex(error!.message, /line 2: (invalid identity name|image path escapes the data root)/, name)
  }
  // Odd but harmless names stay inside the root (they name a folder under it). Names that
  // merely start with '..' ('..hidden') are refused too: conservative, and LFW has none.
  const odd = await LfwPairs.fromText('1\n.hidden 1 2\n~root 1 %2e%2e 2\n', file, { checkImages: false })
  for (const p of odd.pairs) for (const path of [p.a, p.b]) t.true(path.startsWith(root + '/'), path)
})

// ── weights ──────────────────────────────────────────────────────────────────

test('weights: truncated, garbage, lying-header and wrong-arch files are WeightsErrors naming the file', async (t) => {
  const model = await tiny()
  const good = join(tmp, 'good.safetensors')
  await model.save(good)
  const bytes = await readFile(good)
  const hugeHeader = Buffer.from(bytes)
  hugeHeader.writeBigUInt64LE(1n << 60n, 0)
  const cases: [string, Buffer, RegExp][] = [
    ['truncated.safetensors', bytes.subarray(0, bytes.length - 1000), /not a valid safetensors file/],
    ['header-only.safetensors', bytes.subarray(0, 8 + Number(bytes.readBigUInt64LE(0))), /not a valid safetensors file/],
    ['eight-bytes.safetensors', bytes.subarray(0, 8), /not a valid safetensors file/],
    ['empty.safetensors', Buffer.alloc(0), /not a valid safetensors file/],
    ['garbage.safetensors', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131) % 256)), /not a valid safetensors file/],
    ['huge-header.safetensors', hugeHeader, /not a valid safetensors file/],
  ]
  for (const [name, content, message] of cases) {
    const path = join(tmp, name)
    await writeFile(path, content)
    const error = await t.throwsAsync(FaceNet.load(path, { device: 'cpu', threads: 1 }), { instanceOf: WeightsError, message }, name)
    t.true(error!.message.includes(path), name)
  }
  const wrongArch = await t.throwsAsync(FaceNet.load(good, { arch: 'nn4', device: 'cpu' }), { instanceOf: WeightsError })
  t.regex(wrongArch!.message, /holds a 'tiny' model, not 'nn4'/)
  // A checkpoint of another model shape cannot be resumed into this one.
  const other = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', threads: 1 })
  const dir = join(tmp, 'ckpt-32')
  const result = await new Trainer(other, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0, augment: false, checkpointDir: dir }).fit(rawSource(4), { maxSteps: 1 })
  other.dispose()
  const resumed = await t.throwsAsync(new Trainer(model, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0 }).fit(rawSource(4), { maxSteps: 2, resume: result.lastCheckpoint! }))
  t.true((resumed as FaceNetError).code === 'ERR_WEIGHTS' || (resumed as FaceNetError).code === 'ERR_SHAPE', String(resumed))
  t.true(resumed!.message.includes(result.lastCheckpoint!))
  // The model is untouched by the refused files.
  t.true((await model.embed(new Uint8Array(64 * 64 * 3))).every(Number.isFinite))
})

test('security: a pickle payload (.pt) is refused and never executed; none of libtorch\'s pickle loaders is compiled in', async (t) => {
  const marker = join(tmp, 'pwned')
  // The classic pickle that runs os.system on load, and a torch.save-like zip around it.
  const pickle = Buffer.from(`cos\nsystem\n(S'touch ${marker}'\ntR.`, 'latin1')
  const zip = Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(26), Buffer.from('archive/data.pkl'), pickle])
  for (const [name, content] of [['model.pt', pickle], ['model.pth', zip], ['model.safetensors', zip]] as const) {
    const path = join(tmp, name)
    await writeFile(path, content)
    const error = await t.throwsAsync(FaceNet.load(path, { device: 'cpu', arch: 'tiny' }), { instanceOf: WeightsError }, name)
    // A bare pickle is not a torch.save file; the fake zip has no readable archive.
    t.regex(error!.message, /not a torch\.save file|not a readable torch\.save zip archive/)
  }
  t.false(existsSync(marker), 'the pickle ran')
  // Static guard: none of tch's pickle-backed loaders (torch::load / torch::jit) appears in
  // the Rust sources, so no path can reach them.
  const forbidden = /Tensor::load|Tensor::read_np[yz]|load_multi|load_from_stream|CModule|VarStore::load|\.load_partial\(|var_store\(\)\.load\(|vs\.load\(|torch::jit/
  const offenders: string[] = []
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) await walk(path)
      else if (entry.name.endsWith('.rs') && forbidden.test(readFileSync(path, 'utf8'))) offenders.push(path)
    }
  }
  await walk(join(ROOT, 'crates'))
  t.deepEqual(offenders, [])
})

// ── NaN / Inf ────────────────────────────────────────────────────────────────

test('NaN or Inf pixels: embed and trainStep reject with InvalidArgumentError naming the pixel; the model is unharmed', async (t) => {
  const model = await tiny()
  const clean = new Float32Array(2 * 64 * 64 * 3).fill(120)
  const before = await model.embed(clean)
  for (const [value, index] of [[Number.NaN, 5], [Number.POSITIVE_INFINITY, 64 * 64 * 3 + 7], [Number.NEGATIVE_INFINITY, 0]] as const) {
    const bad = clean.slice()
    bad[index] = value
    const error = await t.throwsAsync(model.embed(bad), { instanceOf: InvalidArgumentError })
    t.is(error?.message, `pixel ${index} (image ${Math.floor(index / (64 * 64 * 3))}) is ${value === value ? (value > 0 ? 'inf' : '-inf') : 'NaN'}; float pixels must be finite values in 0..255`)
  }
  const native = modelBinding(model)
  await native.configureTraining({
    optimizer: { name: 'sgd', lr: 0.1, momentum: 0, nesterov: false, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, schedule: 'constant', stepEvery: 1, gamma: 1, totalSteps: 1, minLr: 0, warmupSteps: 0, maxGradNorm: 0 },
    mining: { miner: 'batch-all', margin: 0.2, choice: 'random', fallback: 'skip', distance: 'squared-l2', seed: 0 },
    reducer: 'mean',
    normalize: true,
    seed: 0,
  })
  const batch = new Float32Array(4 * 64 * 64 * 3).map((_, i) => i % 255)
  batch[100] = Number.NaN
  await t.throwsAsync(native.trainStep(batch, Int32Array.from([0, 0, 1, 1]), 4, 64, 64), { code: 'ERR_INVALID_ARGUMENT', message: /^pixel 100 \(image 0\) is NaN/ })
  t.deepEqual(await model.embed(clean), before, 'a refused step changed the weights')
})

test('the binding reports its errors with the code as a property, not in the message; the API turns them into FaceNetErrors keeping the cause', async (t) => {
  const missing = join(tmpdir(), 'facenet-no-such-file.npy')
  const sync = t.throws(() => binding.openNpyImages(missing))
  t.is((sync as Error & { code?: string }).code, 'ERR_DATA')
  t.false(sync!.message.startsWith('ERR_'), sync!.message)
  t.true(sync!.message.includes(missing), sync!.message)
  const model = await FaceNet.create({ arch: 'tiny', embeddingDim: 8 })
  const native = modelBinding(model)
  const rejected = await t.throwsAsync(native.embed(new Float32Array(5), 1, 64, 64))
  t.is((rejected as Error & { code?: string }).code, 'ERR_SHAPE')
  t.false(rejected!.message.startsWith('ERR_'), rejected!.message)
  model.dispose()
  const garbage = join(tmp, 'garbage-for-codes.safetensors')
  await writeFile(garbage, Buffer.from('not a safetensors file at all'))
  const api = await t.throwsAsync(FaceNet.load(garbage), { instanceOf: WeightsError, code: 'ERR_WEIGHTS' })
  t.is((api!.cause as Error & { code?: string }).code, 'ERR_WEIGHTS', 'the native error is kept as the cause')
  t.false(api!.message.startsWith('ERR_'), api!.message)
})

// ── option values ────────────────────────────────────────────────────────────

test('zero, negative and absurd option values: InvalidArgumentError (or the specific coded error) naming the value', async (t) => {
  const model = await tiny()
  const createCases: [object, RegExp, string?][] = [
    [{ embeddingDim: 0 }, /embeddingDim must be an integer from 1 to 4096, got 0/],
    [{ embeddingDim: -3 }, /got -3/],
    [{ embeddingDim: 1e9 }, /got 1000000000/],
    [{ embeddingDim: Number.NaN }, /got NaN/],
    [{ threads: 0 }, /threads must be an integer from 1 to 1024, got 0/],
    [{ threads: 1e6 }, /got 1000000/],
    [{ seed: -1 }, /seed must be an integer .* got -1/],
    [{ seed: 0.5 }, /got 0.5/],
    [{ arch: 5 }, /arch must be a string, got 5/],
    [{ device: {} }, /device must be a string/],
    [{ arch: 'nn9' }, /unknown arch 'nn9'/, 'ERR_UNKNOWN_ARCH'],
    [{ device: 'tpu' }, /unknown device 'tpu'/],
    [{ normalization: 'zz' }, /unknown normalization 'zz'/],
  ]
  for (const [options, message, code] of createCases) {
    const error = await t.throwsAsync(FaceNet.create({ arch: 'tiny', device: 'cpu', ...options }), { message }, JSON.stringify(options))
    t.is(String((error as FaceNetError).code), code ?? 'ERR_INVALID_ARGUMENT', JSON.stringify(options))
  }
  t.true((await t.throwsAsync(FaceNet.create({ arch: 'nn9' as never })))! instanceof UnknownArchError)

  const embedCases: [unknown, RegExp][] = [
    [{ data: new Uint8Array(10), shape: [1e6, 64, 64, 3] }, /pixel data has 10 values but 1000000×64×64×3 needs 12288000000/],
    [{ data: new Uint8Array(10), shape: [-1, 64, 64, 3] }, /non-negative integers/],
    [{ data: new Uint8Array(10), shape: [1.5, 64, 64, 3] }, /non-negative integers/],
    [{ data: new Uint8Array(32 * 32 * 3), shape: [1, 32, 32, 3] }, /32×32 but the network takes 64×64/],
    [{ data: new Uint8Array(64 * 64 * 4), shape: [1, 64, 64, 4] }, /3 channels/],
    [new Uint8Array(7), /whole 64×64×3 images/],
  ]
  for (const [images, message] of embedCases) {
    const error = await t.throwsAsync(model.embed(images as never), { instanceOf: ShapeError, message })
    t.is(error?.code, 'ERR_SHAPE')
  }
  t.is((await model.embed({ data: new Uint8Array(0), shape: [0, 64, 64, 3] })).length, 0, 'an empty batch embeds to nothing')
  await t.throwsAsync(model.embed(null as never), { instanceOf: InvalidArgumentError })

  const trainerCases: [object, RegExp][] = [
    [{ lr: 0 }, /lr must be a positive number, got 0/],
    [{ lr: -1 }, /got -1/],
    [{ lr: Number.NaN }, /got NaN/],
    [{ lr: Number.POSITIVE_INFINITY }, /got Infinity/],
    [{ eps: -1 }, /eps must be a positive number, got -1/],
    [{ warmupSteps: -1 }, /warmupSteps must be non-negative, got -1/],
    [{ maxGradNorm: -1 }, /maxGradNorm must be a finite number ≥ 0, got -1/],
    [{ optimizer: 'sgd', momentum: -1 }, /momentum must be in \[0, 1\), got -1/],
    [{ optimizer: 'adam', betas: [2, 0.9] }, /beta1 must be in \[0, 1\), got 2/],
    [{ schedule: { type: 'step', every: 0 } }, /'every' must be at least 1, got 0/],
    [{ identitiesPerBatch: 0 }, /identitiesPerBatch must be an integer ≥ 1, got 0/],
    [{ imagesPerIdentity: -2 }, /imagesPerIdentity must be an integer ≥ 2 \(an anchor and a positive\), got -2/],
    [{ negativesPerBatch: -1 }, /negatives must be an integer ≥ 0, got -1/],
    [{ centerCrop: 0 }, /centerCrop must be in \(0, 1\], got 0/],
    [{ keepCheckpoints: 0 }, /keepCheckpoints must be an integer ≥ 1, got 0/],
    [{ prefetch: 0 }, /prefetch must be an integer ≥ 1, got 0/],
    [{ checkpointEvery: -1 }, /checkpointEvery must be an integer ≥ 0, got -1/],
    [{ seed: -1 }, /seed must be a non-negative integer, got -1/],
    [{ margin: -1 }, /margin must be a finite number ≥ 0, got -1/],
    [{ tripletsPerBatch: 0 }, /tripletsPerBatch must be an integer ≥ 1, got 0/],
    [{ augment: { cropScale: 0 } }, /cropScale must be in \(0, 1\], got 0/],
    [{ miner: 'bogus' }, /unknown miner 'bogus'/],
  ]
  for (const [options, message] of trainerCases) {
    const error = await t.throwsAsync(
      async () => new Trainer(model, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0, ...options }).fit(rawSource(4), { maxSteps: 1 }),
      { instanceOf: InvalidArgumentError, message },
      JSON.stringify(options),
    )
    t.is(error?.code, 'ERR_INVALID_ARGUMENT')
  }
  const fitCases: [object, RegExp][] = [
    [{ epochs: 0 }, /epochs must be an integer ≥ 1, got 0/],
    [{ maxSteps: 0 }, /maxSteps must be an integer ≥ 1, got 0/],
    [{ maxSteps: 2.5 }, /got 2.5/],
    [{ maxSeconds: -1 }, /maxSeconds must be a finite number ≥ 0, got -1/],
    [{ maxSeconds: Number.NaN }, /got NaN/],
  ]
  for (const [options, message] of fitCases) {
    await t.throwsAsync(new Trainer(model, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0 }).fit(rawSource(4), options), { instanceOf: InvalidArgumentError, message })
  }
  const source = rawSource(4)
  const loaderCases: [object, RegExp][] = [
    [{ size: { height: 0, width: 5 } }, /size.height must be an integer 1..4096, got 0/],
    [{ size: { height: 1e9, width: 5 } }, /got 1000000000/],
    [{ prefetch: -1 }, /prefetch must be an integer ≥ 1, got -1/],
    [{ concurrency: 0 }, /concurrency must be an integer ≥ 1, got 0/],
    [{ seed: -1 }, /seed must be a non-negative integer, got -1/],
    [{ fit: 'zz' }, /fit must be 'cover' or 'fill', got zz/],
    [{ centerCrop: 2 }, /centerCrop must be in \(0, 1\], got 2/],
    [{ onBadImage: 'ignore' }, /onBadImage must be 'error' or 'skip', got ignore/],
  ]
  for (const [options, message] of loaderCases) {
    t.throws(() => new BatchLoader(source, { size: SIZE, sampler: new SequentialSampler(source, 2), ...options }), { instanceOf: InvalidArgumentError, message })
  }
  for (const batchSize of [0, -1, 1.5, Number.NaN]) t.throws(() => new SequentialSampler(source, batchSize), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(ImageFolder.open(tmp, { minImagesPerIdentity: 0 }), { instanceOf: InvalidArgumentError, message: /got 0/ })
})
