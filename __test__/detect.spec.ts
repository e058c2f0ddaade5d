/**
 * FaceDetector on files (colour spaces, pixel limit, corrupt and faceless photos) and the
 * `facenet detect` command with `--draw`.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import sharp from 'sharp'
import { DataError, detectFaces, FaceDetector, type DetectedFace } from '../src'
import { iou } from './fixtures/composites'

const ROOT = resolve(__dirname, '..')
const GROUP = join(ROOT, 'data', 'examples', 'group.jpg')

function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'index.ts'), ...args], { cwd: ROOT })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((done) => child.on('close', (code) => done({ code, stdout, stderr })))
}

/** Each face of `a` has one in `b` at IoU ≥ `min`, and the counts agree. */
function sameFaces(a: readonly DetectedFace[], b: readonly DetectedFace[], min: number): boolean {
  return a.length === b.length && a.every((f) => b.some((g) => iou(f.box, g.box) >= min))
}

test('the example group photo has its five faces, each with its landmarks inside its box, sorted by score', async (t) => {
  const [faces] = await detectFaces([GROUP], { threads: 1 })
  t.is(faces!.length, 5)
  for (const face of faces!) {
    t.true(face.score > 0.99)
    t.is(face.landmarks.length, 5)
    const [x1, y1, x2, y2] = face.box
    for (const [x, y] of face.landmarks) t.true(x > x1 && x < x2 && y > y1 && y < y2, 'landmarks lie inside the box')
  }
  t.deepEqual(faces!.map((f) => f.score), [...faces!.map((f) => f.score)].sort((a, b) => b - a))
})

test('grayscale, CMYK and alpha photos find the faces of the RGB one; a corrupt file is a DataError naming it; no face is []', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-detect-'))
  const files = { gray: join(dir, 'gray.png'), cmyk: join(dir, 'cmyk.jpg'), alpha: join(dir, 'alpha.png'), plain: join(dir, 'plain.png') }
  await sharp(GROUP).toColourspace('b-w').png().toFile(files.gray)
  await sharp(GROUP).toColourspace('cmyk').jpeg({ quality: 95 }).toFile(files.cmyk)
  await sharp(GROUP).ensureAlpha(0.4).png().toFile(files.alpha)
  await sharp({ create: { width: 320, height: 240, channels: 3, background: { r: 120, g: 130, b: 140 } } }).png().toFile(files.plain)
  t.is((await sharp(files.cmyk).metadata()).space, 'cmyk')
  t.is((await sharp(files.gray).metadata()).channels, 1)
  using detector = await FaceDetector.load({ threads: 1 })
  const [rgb, gray, cmyk, alpha, plain] = await detector.detectFiles([GROUP, files.gray, files.cmyk, files.alpha, files.plain])
  t.true(sameFaces(rgb!, gray!, 0.8), 'grayscale')
  t.true(sameFaces(rgb!, cmyk!, 0.8), 'CMYK')
  t.true(sameFaces(rgb!, alpha!, 0.99), 'alpha')
  t.deepEqual(plain, [])

  const corrupt = join(dir, 'corrupt.jpg')
  await writeFile(corrupt, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]))
  const error = await t.throwsAsync(detector.detectFiles([GROUP, corrupt]), { instanceOf: DataError })
  t.is(error?.file, corrupt)
  t.is(error?.code, 'ERR_DATA')
  t.regex(error!.message, /corrupt\.jpg/)
})

test('a photo over maxPixels is detected downscaled, and its boxes come back in the file pixels', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-detect-big-'))
  const big = join(dir, 'big.png')
  await sharp(GROUP).resize(2560, 1920).png().toFile(big)
  using detector = await FaceDetector.load({ threads: 1 })
  const [small] = await detector.detectFiles([GROUP])
  // 4.9 MP over a 300,000-pixel limit: detection sees about 632×474, close to the 640×480 original.
  const [mapped] = await detector.detectFiles([big], { maxPixels: 300_000 })
  const scaledBack = mapped!.map((f) => ({ ...f, box: f.box.map((c) => c / 4) as DetectedFace['box'] }))
  t.true(sameFaces(small!, scaledBack, 0.8), JSON.stringify(scaledBack.map((f) => f.box)))
  t.true(mapped!.every((f) => f.box[2] > 640), 'the largest coordinates are beyond the downscaled size')
})

test('facenet detect prints the faces and --draw writes the photo with its boxes drawn', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-detect-cli-'))
  const out = join(dir, 'drawn.png')
  const run = await cli('detect', GROUP, '--draw', out, '--json', '--threads', '1')
  t.is(run.code, 0, run.stderr)
  const [result] = JSON.parse(run.stdout) as { file: string; faces: DetectedFace[]; drawn: string }[]
  t.is(result!.file, GROUP)
  t.is(result!.faces.length, 5)
  t.is(result!.drawn, out)
  const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true })
  t.deepEqual([info.width, info.height, info.channels], [640, 480, 3])
  // The box's top edge, half way along: the drawing's green, not the photo.
  const [x1, y1, x2] = result!.faces[0]!.box
  const at = (Math.round(y1) * 640 + Math.round((x1 + x2) / 2)) * 3
  const [r, g, b] = data.subarray(at, at + 3)
  t.true(g! > 200 && r! < 60 && b! < 140, `box edge pixel ${r},${g},${b}`)

  const several = join(dir, 'several')
  const plain = join(dir, 'plain.png')
  await sharp({ create: { width: 200, height: 150, channels: 3, background: { r: 10, g: 200, b: 90 } } }).png().toFile(plain)
  const two = await cli('detect', GROUP, plain, '--draw', several, '--threads', '1')
  t.is(two.code, 0, two.stderr)
  t.regex(two.stdout, /group\.jpg: 5 faces/)
  t.regex(two.stdout, /plain\.png: no face/)
  t.deepEqual((await readdir(several)).sort(), ['group.png', 'plain.png'])

  const bad = await cli('detect', GROUP, '--thresholds', '0.6,2,0.7')
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--thresholds: thresholds\[1\] must be a number from 0\.01 to 1, got 2/)
})
