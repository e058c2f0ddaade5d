/**
 * No crash and no data loss (titles 1 and 2): no crash on a second signal, a shrinking
 * pack or a bad thread count; nothing the user had is destroyed by pack, a refused train,
 * or derived files written into (or over) their input. Runs the real `facenet` command as
 * a subprocess on a tiny model and a few LFW images, and the library in-process.
 */
import test from 'ava'
import { createHash } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { DataError, FaceDetector, FaceNet, InvalidArgumentError, NpyDataset, OutputError, packImageFolder, PKSampler, Trainer } from '../src'
import { PackedBatchLoader } from '../src/data/packed-loader'
import { latestCheckpoint } from '../src/training/checkpoints'
import { copyLfwPhotos, startCli, type CliRun } from './helpers'

const ROOT = resolve(__dirname, '..')
const IDENTITIES = ['Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair']
const PER_IDENTITY = 4
const CPU = ['--device', 'cpu', '--threads', '1']
const cli = (...args: string[]): Promise<CliRun> => startCli(args).done
const exists = (path: string) => stat(path).then(() => true, () => false)
const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex')

let dir = ''
let faces = ''

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facenet-rel3-'))
  faces = join(dir, 'faces')
  await copyLfwPhotos(faces, IDENTITIES, PER_IDENTITY)
})

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

const stepLines = async (out: string) => (await readFile(join(out, 'train.jsonl'), 'utf8').catch(() => '')).split('\n').filter((l) => l.includes('"type":"step"')).length

/** Resolves once `out`'s log holds `n` steps, or rejects if the child ended first. */
async function untilSteps(out: string, n: number, child: { exitCode: number | null; signalCode: string | null }): Promise<void> {
  while ((await stepLines(out)) < n) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the run ended (${child.exitCode ?? child.signalCode}) before ${n} steps`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

// ── 1. crashes ────────────────────────────────────────────────────────────────────────

const SIGNAL_TRIALS = Number(process.env.FACENET_SIGNAL_TRIALS ?? 20)

test.serial(`1: a second SIGINT or SIGTERM 50 ms after the first exits 130 or 143 in ${SIGNAL_TRIALS} of ${SIGNAL_TRIALS} runs, the newest checkpoint intact and the folder unlocked`, async (t) => {
  const out = join(dir, 'signals')
  // A model whose steps last long enough that the second signal lands inside one, on the
  // worker thread: where process.exit's teardown segfaulted (exit 139) about half the time.
  const args = ['train', '--data', faces, '--out', out, '--arch', 'tiny', '--tiny-widths', '64,128,256', '--input-size', '160', '--embedding-dim', '16', '--batch-identities', '2', '--batch-images', '2', '--negatives', '0', '--checkpoint-every', '1', '--epochs', '100000', ...CPU]
  let newest: string | undefined
  const codes: number[] = []
  for (let trial = 0; trial < SIGNAL_TRIALS; trial++) {
    const signal = trial % 2 === 0 ? 'SIGINT' : 'SIGTERM'
    const run = startCli(trial === 0 ? args : [...args, '--resume'])
    const before = await stepLines(out)
    await untilSteps(out, before + 2, run.child)
    run.child.kill(signal)
    await new Promise((r) => setTimeout(r, 50))
    run.child.kill(signal)
    const done = await run.done
    t.is(done.signal, null, `trial ${trial}: killed by ${done.signal}: ${done.stderr}`)
    t.is(done.code, signal === 'SIGINT' ? 130 : 143, `trial ${trial} (${signal} twice): ${done.stderr}`)
    codes.push(done.code!)
    t.false(await exists(join(out, '.facenet.lock')), `trial ${trial}: the lock was left behind`)
    const latest = await latestCheckpoint(join(out, 'checkpoints'))
    t.truthy(latest, `trial ${trial}: no checkpoint`)
    // Never older than the one the previous trial left: the resumed run continued from it.
    if (newest) t.true(latest! >= newest, `trial ${trial}: newest checkpoint went back from ${newest} to ${latest}`)
    newest = latest
  }
  // The last checkpoint loads and the run continues from it.
  const model = await FaceNet.load(newest!, { device: 'cpu', threads: 1 })
  const embeddings = await model.embed(new Uint8Array(160 * 160 * 3).fill(90))
  model.dispose()
  t.true(embeddings.every(Number.isFinite))
  const resumed = await cli(...args, '--resume', '--max-steps', String((await stepLines(out)) + 1))
  t.is(resumed.code, 0, resumed.stderr)
  t.log(`${SIGNAL_TRIALS} double signals: exit codes ${[...new Set(codes)].join(', ')}; the chain ended at ${newest}`)
})

test('1: FaceDetector.load with threads 0, -1, 1.5, NaN or 1e6 rejects with an InvalidArgumentError naming the value (the promise settles)', async (t) => {
  for (const threads of [0, -1, 1.5, Number.NaN, 1e6]) {
    const error = await t.throwsAsync(FaceDetector.load({ threads }), { instanceOf: InvalidArgumentError }, `threads ${threads}`)
    t.is(error!.code, 'ERR_INVALID_ARGUMENT')
    t.regex(error!.message, new RegExp(`threads must be a whole number from 1 to 1024, got ${String(threads).replace('.', '\\.')}`))
  }
  const detector = await FaceDetector.load({ threads: 1 })
  detector.dispose()
  t.pass()
})

/** A pack of the test faces at 32×32, and a dataset open on it. */
async function packed(name: string) {
  const out = join(dir, name)
  await packImageFolder(faces, out, { size: 32, onWarning: () => {} })
  const dataset = await NpyDataset.open({ images: join(out, 'images.npy'), names: join(out, 'names.npy') })
  return { out, dataset }
}

test('1: an images.npy truncated while a run reads it is a DataError naming the file (no SIGBUS), from the loader and from fit', async (t) => {
  const { out, dataset } = await packed('shrinks')
  const images = join(out, 'images.npy')
  const sampler = new PKSampler(dataset, { P: 2, K: 2, seed: 1 })
  const loader = new PackedBatchLoader(dataset, { size: { height: 32, width: 32 }, sampler })
  // Opened (its size checked against the header), then cut back in place by another
  // process, as `pack` used to on resume: with the rows memory-mapped, this was SIGBUS.
  await truncate(images, 128 + 3 * 32 * 32 * 3)
  const error = await t.throwsAsync(
    (async () => {
      for await (const batch of loader) t.truthy(batch)
    })(),
    { instanceOf: DataError },
  )
  t.is(error!.file, images)
  t.regex(error!.message, /shrank while in use: image \d+ ends at byte \d+, the file now has 9344 bytes/)

  const model = await FaceNet.create({ arch: 'tiny', embeddingDim: 8, device: 'cpu', threads: 1 })
  const trainer = new Trainer(model, { identitiesPerBatch: 2, imagesPerIdentity: 2, negativesPerBatch: 0, augment: false, seed: 1 })
  const fitError = await t.throwsAsync(trainer.fit(dataset, { epochs: 1 }), { instanceOf: DataError })
  t.is(fitError!.file, images)
  model.dispose()
})

test('1: a pack writes its rows to images.npy.partial and renames it at the end: a dataset opened on the old file keeps reading its own rows', async (t) => {
  const { out, dataset } = await packed('replaced')
  const images = join(out, 'images.npy')
  const rows = async () => Promise.all([0, dataset.length - 1].map(async (i) => Buffer.from(((await dataset.input(i)) as { data: Buffer }).data)))
  const expected = await rows()
  // An interrupted pack never shows a half-written images.npy.
  const other = join(dir, 'interrupted')
  const controller = new AbortController()
  const first = await packImageFolder(faces, other, { size: 32, batchSize: 4, signal: controller.signal, onProgress: () => controller.abort(), onWarning: () => {} })
  t.false(first.complete)
  t.false(await exists(join(other, 'images.npy')))
  t.true(await exists(join(other, 'images.npy.partial')))
  const done = await packImageFolder(faces, other, { size: 32, batchSize: 4, onWarning: () => {} })
  t.true(done.complete)
  t.false(await exists(join(other, 'images.npy.partial')))
  // A file replaced by rename (what a finishing pack does) leaves the open dataset its rows.
  await writeFile(`${images}.new`, Buffer.alloc(10))
  await rename(`${images}.new`, images)
  t.deepEqual(await rows(), expected)
})

// ── 2. never destroy what the user had ────────────────────────────────────────────────

test('2: pack refuses an OUT holding the user\'s own images.npy or names.npy (OutputError naming it) and leaves both byte-identical', async (t) => {
  for (const name of ['images.npy', 'names.npy', 'index.json']) {
    const out = join(dir, `own-${name}`)
    await mkdir(out, { recursive: true })
    await writeFile(join(out, name), `the user's own ${name}`)
    const before = await sha(join(out, name))
    const error = await t.throwsAsync(packImageFolder(faces, out, { size: 32, onWarning: () => {} }), { instanceOf: OutputError })
    t.is(error!.file, join(out, name))
    t.regex(error!.message, /was not written by a pack/)
    t.is(await sha(join(out, name)), before)
    t.deepEqual(await readdir(out), [name])
  }
  const out = join(dir, 'own-cli')
  await mkdir(out)
  await writeFile(join(out, 'images.npy'), 'mine')
  const run = await cli('pack', faces, out, '--size', '32')
  t.is(run.code, 1, run.stderr)
  t.regex(run.stderr, /images\.npy: exists and was not written by a pack/)
  t.is(await readFile(join(out, 'images.npy'), 'utf8'), 'mine')
  // Nor into its own source folder, where OUT would become one more identity.
  const inside = await cli('pack', faces, join(faces, 'packed'), '--size', '32')
  t.is(inside.code, 2, inside.stderr)
  t.regex(inside.stderr, /is inside the input folder .*the pack must go to a folder outside it/)
  t.false(await exists(join(faces, 'packed')))
})

const trainArgs = (out: string, ...more: string[]) => ['train', '--out', out, '--arch', 'tiny', '--embedding-dim', '16', ...CPU, ...more]

test.serial('2: a refused train --resume (another --loss, another --data) changes nothing on disk, config.json included; a plain --resume still works', async (t) => {
  const out = join(dir, 'refused')
  const first = await cli(...trainArgs(out, '--data', faces, '--loss', 'arcface', '--batch-size', '4', '--max-steps', '2'))
  t.is(first.code, 0, first.stderr)
  const snapshot = async () => {
    const files = (await readdir(out, { recursive: true })).filter((f) => !f.endsWith('.lock')).sort()
    return Promise.all(files.map(async (f) => [f, (await stat(join(out, f))).isFile() ? await sha(join(out, f)) : 'dir']))
  }
  const before = await snapshot()
  const other = join(dir, 'three-people')
  for (const id of IDENTITIES.slice(0, 3)) await mkdir(join(other, id), { recursive: true })
  for (const id of IDENTITIES.slice(0, 3)) for (const f of await readdir(join(faces, id))) await copyFile(join(faces, id, f), join(other, id, f))
  // Another margin loss (which used to continue silently), another loss family, other data.
  for (const more of [['--loss', 'cosface'], ['--loss', 'triplet'], ['--margin', '0.3'], ['--data', other]]) {
    const run = await cli(...trainArgs(out, '--resume', '--max-steps', '4', ...more))
    t.not(run.code, 0, `${more.join(' ')} was not refused: ${run.stderr}`)
    t.deepEqual(await snapshot(), before, `${more.join(' ')} changed the run folder`)
  }
  const cosface = await cli(...trainArgs(out, '--resume', '--max-steps', '4', '--loss', 'cosface'))
  t.regex(cosface.stderr, /was trained with the loss arcface \(--margin 0\.5, scale 64\); this trainer's is cosface \(--margin 0\.4, scale 64\)/)
  const plain = await cli(...trainArgs(out, '--resume', '--max-steps', '3'))
  t.is(plain.code, 0, plain.stderr)
  t.like(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')), { loss: 'arcface', data: faces })
})

test('2: align refuses an output folder that is the input, inside it, or a symlink to it (or into it), writing nothing', async (t) => {
  const raw = join(dir, 'raw-self')
  await mkdir(join(raw, 'p'), { recursive: true })
  await copyFile(join(faces, IDENTITIES[0]!, (await readdir(join(faces, IDENTITIES[0]!)))[0]!), join(raw, 'p', 'a.jpg'))
  const { symlink } = await import('node:fs/promises')
  await symlink(raw, join(dir, 'rawlink'))
  for (const out of [raw, join(dir, 'rawlink'), join(raw, 'crops'), join(dir, 'rawlink', 'crops'), `${raw}/p/..`]) {
    const run = await cli('align', raw, out, '--device', 'cpu')
    t.is(run.code, 2, `${out}: ${run.stderr}`)
    t.regex(run.stderr, /is (inside )?the input folder .*must go to a folder outside it/, out)
  }
  t.deepEqual((await readdir(raw, { recursive: true })).sort(), ['p', 'p/a.jpg'])
})

test.serial('2: inputs that share an output name never overwrite each other: x.jpg/x.png/x.webp, and with --faces all a photo g_1.jpg beside the second face of g.jpg', async (t) => {
  const raw = join(dir, 'raw-names')
  await mkdir(join(raw, 'p'), { recursive: true })
  const face = join(faces, IDENTITIES[0]!, (await readdir(join(faces, IDENTITIES[0]!)))[0]!)
  const sharp = (await import('sharp')).default
  await copyFile(face, join(raw, 'p', 'x.jpg'))
  await sharp(face).png().toFile(join(raw, 'p', 'x.png'))
  await sharp(face).flop().webp().toFile(join(raw, 'p', 'x.webp'))
  // A group photo g.jpg (several faces) and a photo of one face named like its second crop.
  await copyFile(join(ROOT, 'data', 'examples', 'group.jpg'), join(raw, 'p', 'g.jpg'))
  await copyFile(join(faces, IDENTITIES[1]!, (await readdir(join(faces, IDENTITIES[1]!)))[0]!), join(raw, 'p', 'g_1.jpg'))
  const out = join(dir, 'crops-names')
  const run = await cli('align', raw, out, '--faces', 'all', '--device', 'cpu', '--json')
  t.is(run.code, 0, run.stderr)
  const files = (await readdir(join(out, 'p'))).sort()
  t.true(files.includes('x.jpg.jpg') && files.includes('x.png.jpg') && files.includes('x.webp.jpg'), files.join(' '))
  t.true(files.includes('g.jpg') && files.includes('g_1.jpg') && files.includes('g_1~1.jpg'), files.join(' '))
  const summary = JSON.parse(run.stdout) as { written: number; multipleFaces: number }
  // Every crop written has a file of its own.
  t.is(files.filter((f) => f.endsWith('.jpg')).length, summary.written)
  t.false(files.some((f) => f.includes('.tmp-')))
  // The photo g_1.jpg's crop is its own face, not the group's second one: a rerun changes nothing.
  const crop = await sha(join(out, 'p', 'g_1.jpg'))
  const again = await cli('align', raw, out, '--faces', 'all', '--device', 'cpu', '--json')
  t.is(again.code, 0, again.stderr)
  t.is(await sha(join(out, 'p', 'g_1.jpg')), crop)
  t.deepEqual((await readdir(join(out, 'p'))).sort(), files)
})

test.serial('2: detect --draw DIR names each photo by the same rule (a.jpg, a.png and another folder\'s a.jpg get three PNGs) and refuses a DIR that holds the photos', async (t) => {
  const one = join(dir, 'draw-one')
  const two = join(dir, 'draw-two')
  await mkdir(one, { recursive: true })
  await mkdir(two, { recursive: true })
  const face = join(faces, IDENTITIES[2]!, (await readdir(join(faces, IDENTITIES[2]!)))[0]!)
  const sharp = (await import('sharp')).default
  await copyFile(face, join(one, 'a.jpg'))
  await sharp(face).png().toFile(join(one, 'a.png'))
  await copyFile(face, join(two, 'a.jpg'))
  const photos = [join(one, 'a.jpg'), join(one, 'a.png'), join(two, 'a.jpg')]
  const drawn = join(dir, 'drawn')
  const run = await cli('detect', ...photos, '--draw', drawn, '--device', 'cpu', '--json')
  t.is(run.code, 0, run.stderr)
  t.deepEqual((await readdir(drawn)).sort(), ['a.jpg.png', 'a.jpg~1.png', 'a.png.png'])
  const inPlace = await cli('detect', ...photos, '--draw', one, '--device', 'cpu')
  t.is(inPlace.code, 2, inPlace.stderr)
  t.regex(inPlace.stderr, /is the input folder .*--draw: the drawn photos must go to a folder outside it/)
  t.deepEqual((await readdir(one)).sort(), ['a.jpg', 'a.png'])
})
