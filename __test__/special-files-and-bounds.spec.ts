/**
 * Special files and bounds (titles 3–9): special files at every path a
 * reader takes, bounded detection options, the detector API's argument checks, partial
 * results, detection geometry, bf16 unit vectors, long names in messages and a full disk.
 * Runs the `facenet` command as a subprocess and the library in-process, on LFW crops.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import sharp from 'sharp'
import {
  alignFaces,
  DataError,
  FaceDetector,
  FaceNet,
  FaceNetError,
  ImageFolder,
  InvalidArgumentError,
  OutputError,
  ShapeError,
  WeightsError,
} from '../src'
import { decodePhoto, MAX_PHOTO_PIXELS } from '../src/data/preprocess'
import { packImageFolder } from '../src/data/pack'
import { readTorchVersion } from '../src/libtorch'
import { readRegularFile, regularFileSize } from '../src/regular-file'
import { startCli } from './helpers'

const ROOT = resolve(__dirname, '..')
const LFW = join(ROOT, 'data', 'lfw')
const PHOTO = join(LFW, 'Colin_Powell', 'Colin_Powell_0040.jpg')
const cli = (...args: string[]) => startCli(args).done

let dir = ''
let fifo = ''
let detector: FaceDetector

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facenet-rel3-'))
  fifo = join(dir, 'photo.jpg')
  // A FIFO nobody writes to: any reader that opens it blocks for ever.
  execFileSync('mkfifo', [fifo])
  detector = await FaceDetector.load({ threads: 1 })
})

test.after.always(async () => {
  detector?.dispose()
  await rm(dir, { recursive: true, force: true })
})

// ---- 3. special files everywhere a path comes in ----

test('3: the one helper names a FIFO, a device and a folder without opening them', async (t) => {
  for (const [path, kind] of [
    [fifo, 'a FIFO'],
    ['/dev/zero', 'a character device'],
    [dir, 'a directory'],
  ] as const) {
    const error = await t.throwsAsync(regularFileSize(path), { instanceOf: DataError })
    t.is(error?.message, `${path}: is not a regular file (${kind})`)
    await t.throwsAsync(readRegularFile(path), { instanceOf: DataError, message: /is not a regular file/ })
  }
  t.is(await regularFileSize(PHOTO), (await readFile(PHOTO)).length)
})

test('3: detect refuses a FIFO and /dev/zero as photos (no hang, no 4 GB read)', async (t) => {
  await t.throwsAsync(detector.detectFiles([fifo]), { instanceOf: DataError, message: /photo\.jpg: is not a regular file \(a FIFO\)/ })
  await t.throwsAsync(detector.detectFiles(['/dev/zero']), { instanceOf: DataError, message: /\/dev\/zero: is not a regular file/ })
})

test('3: align refuses /dev/zero and a FIFO as photos, and skips them with onBadImage skip', async (t) => {
  await t.throwsAsync(alignFaces(['/dev/zero'], { detector }), { instanceOf: DataError, message: /\/dev\/zero: is not a regular file/ })
  const out = await alignFaces([fifo, PHOTO], { detector, onBadImage: 'skip', size: 64 })
  t.deepEqual(
    out.bad.map((b) => b.index),
    [0],
  )
  t.true(out.shape[0] >= 1, 'the good photo still gives its crop')
})

test('3: the detector weights, a model file and a resumed checkpoint refuse special files', async (t) => {
  await t.throwsAsync(FaceDetector.load({ weights: '/dev/zero', threads: 1 }), { instanceOf: WeightsError, message: /\/dev\/zero: is not a regular file \(a character device\)/ })
  await t.throwsAsync(FaceDetector.load({ weights: fifo, threads: 1 }), { instanceOf: WeightsError, message: /is not a regular file \(a FIFO\)/ })
  await t.throwsAsync(FaceNet.load('/dev/zero', { threads: 1 }), { instanceOf: FaceNetError, message: /\/dev\/zero: is not a regular file/ })
})

test('3: train --resume /dev/zero and --resume FIFO are refused with a coded error, quickly', async (t) => {
  const data = join(dir, 'resume-data')
  for (const id of ['Colin_Powell', 'Tony_Blair']) {
    await mkdir(join(data, id), { recursive: true })
    const files = (await readdir(join(LFW, id))).sort().slice(0, 2)
    for (const f of files) await copyFile(join(LFW, id, f), join(data, id, f))
  }
  for (const target of ['/dev/zero', fifo]) {
    const run = await cli('train', '--data', data, '--out', join(dir, 'resume-out'), '--arch', 'tiny', '--device', 'cpu', '--threads', '1', '--resume', target)
    t.is(run.code, 1, run.stderr)
    t.regex(run.stderr, /is not a regular file/)
  }
})

test('3: torch discovery reads no FIFO (version.py of a fake torch folder)', (t) => {
  const torch = join(dir, 'fake-torch')
  execFileSync('mkdir', ['-p', torch])
  execFileSync('mkfifo', [join(torch, 'version.py')])
  execFileSync('mkfifo', [join(torch, 'build-version')])
  t.is(readTorchVersion(torch), undefined)
})

test('3: an ImageFolder lists a FIFO among the photos as bad, by kind', async (t) => {
  const root = join(dir, 'folder-fifo')
  await mkdir(join(root, 'A'), { recursive: true })
  await copyFile(PHOTO, join(root, 'A', 'good.jpg'))
  execFileSync('mkfifo', [join(root, 'A', 'pipe.jpg')])
  const folder = await ImageFolder.open(root, { onBadImage: 'skip', onWarning: () => {} })
  t.is(folder.items.length, 1)
  t.regex(folder.skipped.map((s) => s.reason).join(' '), /is not a regular file \(a FIFO\)/)
})

// ---- 4. bounded detection options, API and CLI ----

test('4: the API refuses detection options outside the documented bounds', async (t) => {
  const image = { data: new Uint8Array(32 * 32 * 3), shape: [1, 32, 32, 3] as const }
  for (const options of [{ factor: 0.999999 }, { factor: 0 }, { minFaceSize: 1 }, { minFaceSize: 0.001 }, { thresholds: [0, 0.7, 0.7] }, { thresholds: [-1, 0.7, 0.7] }, { thresholds: [0.6, 0.7, Number.NaN] }, { maxPixels: MAX_PHOTO_PIXELS + 1 }]) {
    await t.throwsAsync(detector.detect(image, options as never), { instanceOf: InvalidArgumentError }, JSON.stringify(options))
  }
  for (const threads of [0, -1, 100_000, 1.5]) {
    await t.throwsAsync(FaceDetector.load({ threads }), { instanceOf: InvalidArgumentError, message: /threads must be a whole number from 1 to 1024/ })
  }
  await t.throwsAsync(alignFaces([PHOTO], { detector, size: 4096 }), { instanceOf: InvalidArgumentError, message: /align size must be an integer 1\.\.1024/ })
  // At the bounds, detection runs.
  t.is((await detector.detect(image, { factor: 0.95, minFaceSize: 12, thresholds: [0.01, 0.01, 0.01] })).length, 1)
})

test('4: the CLI refuses the same values as usage errors', async (t) => {
  for (const flags of [['--factor', '0.999999'], ['--min-face-size', '1'], ['--min-face-size', '0.001'], ['--threads', '100000'], ['--thresholds', '0,0.7,0.7']]) {
    const run = await cli('detect', PHOTO, ...flags)
    t.is(run.code, 2, `${flags.join(' ')}: ${run.stderr}`)
  }
  const align = await cli('align', join(dir, 'nowhere'), join(dir, 'nowhere-out'), '--size', '4096')
  t.is(align.code, 2, align.stderr)
  t.regex(align.stderr, /size/)
})

// ---- 5. the detector API validates like embed ----

test('5: malformed batches are coded FaceNetErrors, never truncated counts or TypeErrors', async (t) => {
  const data = new Uint8Array(8 * 8 * 3)
  const cases: [unknown, new (...args: never[]) => FaceNetError][] = [
    [{ data, shape: [1.5, 8, 8, 3] }, ShapeError],
    [{ data, shape: [2 ** 32 + 1, 8, 8, 3] }, ShapeError],
    [{ data, shape: [1, 8, 8, 4] }, ShapeError],
    [{ data, shape: [2, 8, 8, 3] }, ShapeError],
    [{ data }, ShapeError],
    [null, InvalidArgumentError],
    [undefined, InvalidArgumentError],
    [[1, 2, 3], InvalidArgumentError],
    [{ data: Array.from(data), shape: [1, 8, 8, 3] }, InvalidArgumentError],
  ]
  for (const [images, kind] of cases) {
    const error = await t.throwsAsync(detector.detect(images as never), { instanceOf: kind }, JSON.stringify(images)?.slice(0, 60))
    t.truthy(error?.code)
  }
  await t.throwsAsync(detector.detect({ data, shape: [1, 8, 8, 3] }, { thresholds: null } as never), { instanceOf: InvalidArgumentError, message: /thresholds must be three numbers/ })
  await t.throwsAsync(detector.detect({ data, shape: [1, 8, 8, 3] }, { minFace: 20 } as never), { instanceOf: InvalidArgumentError, message: /unknown option 'minFace'/ })
  await t.throwsAsync(detector.detectFiles(null as never), { instanceOf: InvalidArgumentError })
})

// ---- 6. partial results are kept ----

test('6: detect a.jpg bad.jpg c.jpg --json prints the good results and reports the bad one', async (t) => {
  const bad = join(dir, 'bad.jpg')
  await writeFile(bad, 'not a jpeg')
  const c = join(LFW, 'Tony_Blair', 'Tony_Blair_0018.jpg')
  const run = await cli('detect', PHOTO, bad, c, '--json', '--threads', '1')
  t.is(run.code, 1, 'a bad photo is a failure by default')
  const results = JSON.parse(run.stdout) as { file: string; faces?: unknown[]; error?: { code: string } }[]
  t.deepEqual(
    results.map((r) => r.file),
    [PHOTO, bad, c],
  )
  t.true(results[0]!.faces!.length >= 1 && results[2]!.faces!.length >= 1)
  t.is(results[1]!.error?.code, 'ERR_DATA')
  t.regex(run.stderr, /bad\.jpg/)
  const skipped = await cli('detect', PHOTO, bad, '--on-bad-image', 'skip', '--threads', '1')
  t.is(skipped.code, 0, skipped.stderr)
  t.regex(skipped.stdout, /Colin_Powell_0040\.jpg: 1 face/)
  t.regex(skipped.stderr, /1 of 2 photos could not be read \(skipped\)/)
})

test('6: align reads .gif and .tif as detect does, and lists the files it did not read', async (t) => {
  const raw = join(dir, 'align-formats')
  await mkdir(raw, { recursive: true })
  await sharp(PHOTO).gif().toFile(join(raw, 'a.gif'))
  await sharp(PHOTO).tiff().toFile(join(raw, 'b.tif'))
  await writeFile(join(raw, 'notes.txt'), 'not a photo')
  const out = join(dir, 'align-formats-out')
  const run = await cli('align', raw, out, '--size', '64', '--threads', '1', '--json')
  t.is(run.code, 0, run.stderr)
  const result = JSON.parse(run.stdout) as { photos: number; notImages: number }
  t.is(result.photos, 2)
  t.is(result.notImages, 1)
  const summary = JSON.parse(await readFile(join(out, 'align-summary.json'), 'utf8')) as { notImages: string[] }
  t.deepEqual(summary.notImages, ['notes.txt'])
})

// ---- 7. detection geometry ----

test('7: one decoder and one limit: detectFiles and alignFaces give a large photo the same boxes', async (t) => {
  // The group photo at 1999×1333 with maxPixels 500 000: decoded at 865×577, the sides
  // round to scales 0.43272 and 0.43286.
  const big = join(dir, 'group-large.png')
  await sharp(join(ROOT, 'data', 'examples', 'group.jpg')).resize(1999, 1333, { fit: 'fill' }).png().toFile(big)
  const photo = await decodePhoto(big, 500_000)
  t.not(photo.scaleX, photo.scaleY, 'the test needs unequal rounding')
  t.is(photo.scaleX, photo.width / 1999)
  t.is(photo.scaleY, photo.height / 1333)
  const [viaDetect] = await detector.detectFiles([big], { maxPixels: 500_000 })
  const viaAlign = await alignFaces([big], { detector, maxPixels: 500_000, size: 32 })
  t.true(viaDetect!.length >= 1)
  t.deepEqual(viaAlign.detections[0]!.map((f) => f.box), viaDetect!.map((f) => f.box))
  // y is mapped back with the y scale: boxes of the decoded pixels divided per axis.
  const [inDecoded] = await detector.detect({ data: photo.data, shape: [1, photo.height, photo.width, 3] })
  const [x1, y1, x2, y2] = inDecoded![0]!.box
  t.deepEqual(viaDetect![0]!.box, [x1 / photo.scaleX, y1 / photo.scaleY, x2 / photo.scaleX, y2 / photo.scaleY])
})

test('7: detect and align default to the same pixel limit', async (t) => {
  const { ALIGN_MAX_PIXELS } = await import('../src')
  t.is(ALIGN_MAX_PIXELS, MAX_PHOTO_PIXELS)
  const help = await cli('detect', '--help')
  t.regex(help.stdout, new RegExp(`--max-pixels N .*the most, and the limit align uses too \\(default ${MAX_PHOTO_PIXELS}\\)`))
})

// ---- 9 (two items). long names in messages; a full disk ----

test('9: a 1M-character identity name is not echoed whole into a message', async (t) => {
  const root = join(dir, 'names')
  await mkdir(join(root, 'A'), { recursive: true })
  await copyFile(PHOTO, join(root, 'A', '1.jpg'))
  const folder = await ImageFolder.open(root)
  const long = 'x'.repeat(1_000_000)
  const error = t.throws(() => folder.subset([long]), { instanceOf: InvalidArgumentError })
  t.true(error!.message.length < 400, `message of ${error!.message.length} characters`)
  t.regex(error!.message, /\(1000000 characters\)/)
  // Any coded error is bounded, whatever was interpolated into it.
  t.true(new DataError(long, long).message.length <= 10_100)
})

/** A 64 KiB tmpfs: a disk that fills up. Mounting needs root; elsewhere the spec is skipped. */
function tinyDisk(): string | undefined {
  const at = join(tmpdir(), `facenet-rel3-full-${process.pid}`)
  try {
    execFileSync('mkdir', ['-p', at])
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', at], { stdio: 'ignore' })
    return at
  } catch {
    execFileSync('rm', ['-rf', at])
    return undefined
  }
}
const disk = process.getuid?.() === 0 ? tinyDisk() : undefined
test.after.always(() => {
  if (disk) execFileSync('umount', [disk])
})

;(disk ? test : test.skip)('9: pack onto a full disk names the file it could not write', async (t) => {
  const root = join(dir, 'pack-src')
  await mkdir(join(root, 'A'), { recursive: true })
  // 8 photos at 64×64: 98 KB of pixels for a 64 KB disk.
  for (let i = 0; i < 8; i++) await copyFile(PHOTO, join(root, 'A', `${i}.jpg`))
  const error = await t.throwsAsync(packImageFolder(root, join(disk!, 'pack'), { size: 64, batchSize: 2 }), { instanceOf: OutputError })
  t.regex(error!.message, /pack\/(images\.npy|pack\.json)[^:]*: could not be written \(ENOSPC\): the disk is full/)
})
