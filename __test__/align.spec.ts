import test from 'ava'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import sharp from 'sharp'
import { TEMPLATE } from './helpers'
import { alignFaces, DataError, embedFiles, FaceNet, ImageFolder, type FaceGeometry } from '../src'


/** A W×H photo whose red channel is x and green y (so a crop shows where it was cut), blue 9. */
function ramp(width: number, height: number): Uint8Array {
  const data = new Uint8Array(width * height * 3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set([x, y, 9], (y * width + x) * 3)
  }
  return data
}

/** A face whose landmarks are the template at 112, shifted by (dx, dy). */
function face(dx: number, dy: number, scale = 1): FaceGeometry {
  return {
    box: [dx, dy, dx + 112 * scale, dy + 112 * scale],
    landmarks: TEMPLATE.map(([x, y]) => [x! * scale + dx, y! * scale + dy]),
    score: 0.99,
  }
}

test('template mode: landmarks on the template give the photo back, shifted by the face position', async (t) => {
  const photo = { data: ramp(200, 180), shape: [1, 180, 200, 3] as const }
  const out = await alignFaces(photo, { size: 112, detections: [[face(30, 20), face(50, 40)]] })
  t.deepEqual(out.shape, [2, 112, 112, 3])
  t.deepEqual([...out.imageIndex], [0, 0])
  t.deepEqual([...out.faceIndex], [0, 1])
  t.deepEqual(out.noFace, [])
  const at = (row: number, x: number, y: number) => [...out.data.subarray(((row * 112 + y) * 112 + x) * 3, ((row * 112 + y) * 112 + x) * 3 + 3)]
  t.deepEqual(at(0, 0, 0), [30, 20, 9])
  t.deepEqual(at(0, 100, 70), [130, 90, 9])
  t.deepEqual(at(1, 5, 6), [55, 46, 9])
})

test('template mode scales the template to the crop size', async (t) => {
  // A face twice the template's size, aligned to 224, is the photo at 1:1.
  const photo = { data: ramp(250, 250), shape: [1, 250, 250, 3] as const }
  const out = await alignFaces(photo, { size: 224, detections: [[face(10, 12, 2)]] })
  const px = (x: number, y: number) => [...out.data.subarray((y * 224 + x) * 3, (y * 224 + x) * 3 + 3)]
  t.deepEqual(px(0, 0), [10, 12, 9])
  t.deepEqual(px(200, 150), [210, 162, 9])
})

test("faces: 'largest' keeps the largest box; a photo without faces is listed in noFace", async (t) => {
  const photos = { data: new Uint8Array([...ramp(200, 200), ...ramp(200, 200), ...ramp(200, 200)]), shape: [3, 200, 200, 3] as const }
  const out = await alignFaces(photos, { size: 64, faces: 'largest', detections: [[face(0, 0, 0.5), face(10, 10, 1.2)], [], [face(40, 40)]] })
  t.deepEqual(out.shape, [2, 64, 64, 3])
  t.deepEqual([...out.imageIndex], [0, 2])
  t.deepEqual([...out.faceIndex], [1, 0])
  t.deepEqual(out.noFace, [1])
  t.is(out.detections[0]!.length, 2)
})

test("margin mode cuts facenet-pytorch's box + margin", async (t) => {
  const photo = { data: ramp(200, 200), shape: [1, 200, 200, 3] as const }
  // Box 40..120 at size 80 with margin 0: the box itself, pixel for pixel.
  const f: FaceGeometry = { box: [40, 50, 120, 130], landmarks: face(0, 0).landmarks }
  const out = await alignFaces(photo, { size: 80, mode: 'margin', detections: [[f]] })
  t.deepEqual([...out.data.subarray(0, 3)], [40, 50, 9])
  const last = (79 * 80 + 79) * 3
  t.deepEqual([...out.data.subarray(last, last + 3)], [119, 129, 9])
  // margin 16 of 80 output pixels: grows the 80-pixel box by 16·80/64 = 20 pixels.
  const wide = await alignFaces(photo, { size: 80, mode: 'margin', margin: 16, detections: [[f]] })
  t.deepEqual([...wide.data.subarray(0, 3)], [30, 40, 9])
})

test('files: grayscale, CMYK and alpha photos decode to RGB; a corrupt file is a DataError naming it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-align-'))
  const raw = { raw: { width: 120, height: 120, channels: 3 as const } }
  const rgb = Buffer.from(ramp(120, 120))
  const gray = join(dir, 'gray.png')
  const cmyk = join(dir, 'cmyk.jpg')
  const alpha = join(dir, 'alpha.png')
  await sharp(rgb, raw).toColourspace('b-w').png().toFile(gray)
  await sharp(rgb, raw).toColourspace('cmyk').jpeg({ quality: 95 }).toFile(cmyk)
  await sharp(rgb, raw).ensureAlpha(0.5).png().toFile(alpha)
  t.is((await sharp(cmyk).metadata()).space, 'cmyk')
  const f = face(4, 4)
  const out = await alignFaces([gray, cmyk, alpha], { size: 112, detections: [[f], [f], [f]] })
  t.deepEqual(out.shape, [3, 112, 112, 3])
  const px = (row: number, x: number, y: number) => [...out.data.subarray(((row * 112 + y) * 112 + x) * 3, ((row * 112 + y) * 112 + x) * 3 + 3)]
  const [r, g, b] = px(0, 50, 60)
  t.true(r === g && g === b, 'grayscale gives equal channels')
  const [cr, cg] = px(1, 50, 60)
  t.true(Math.abs(cr! - 54) <= 6 && Math.abs(cg! - 64) <= 6, `CMYK converted back near (54, 64), got ${cr}, ${cg}`)
  t.deepEqual(px(2, 50, 60), [54, 64, 9], 'alpha dropped, colour kept')

  const corrupt = join(dir, 'corrupt.jpg')
  await writeFile(corrupt, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]))
  const error = await t.throwsAsync(alignFaces([gray, corrupt], { detections: [[f], [f]] }), { instanceOf: DataError })
  t.is(error?.file, corrupt)
})

test("embedFiles with align: the largest face of each photo; a photo without a face is a NaN row listed in noFace", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-embed-align-'))
  const raw = { raw: { width: 160, height: 160, channels: 3 as const } }
  const files = ['a.png', 'b.png', 'c.png'].map((n) => join(dir, n))
  for (const [i, file] of files.entries()) await sharp(Buffer.from(ramp(160, 160).map((v) => (v * (i + 1)) & 0xff)), raw).png().toFile(file)
  // A stand-in detector: this spec is about embedFiles' bookkeeping, not detection.
  let calls = 0
  const detector = {
    detect: async () => {
      calls += 1
      return [calls === 2 ? [] : [face(10, 10, 0.8), face(20, 20)]]
    },
  }
  const model = await FaceNet.create({ arch: 'tiny', device: 'cpu', threads: 1 })
  const out = await embedFiles(model, files, { align: { size: 112, detector } })
  t.is(calls, 3)
  t.is(out.dim, 128)
  t.is(out.embeddings.length, 3 * 128)
  t.deepEqual(out.noFace, [1])
  t.deepEqual([...out.imageIndex], [0, 1, 2])
  t.deepEqual([...out.faceIndex], [1, -1, 1])
  t.true(out.embeddings.subarray(128, 256).every(Number.isNaN))
  for (const row of [0, 2]) {
    const norm = Math.hypot(...out.embeddings.subarray(row * 128, (row + 1) * 128))
    t.true(Math.abs(norm - 1) < 1e-4, `row ${row} has norm ${norm}`)
  }
  // The same photo through alignFaces and a plain embed gives the same row.
  const crops = await alignFaces([files[0]!], { size: 112, faces: 'largest', detections: [[face(10, 10, 0.8), face(20, 20)]] })
  const resized = await sharp(Buffer.from(crops.data), { raw: { width: 112, height: 112, channels: 3 } }).resize(64, 64).raw().toBuffer()
  const direct = await model.embed({ data: new Uint8Array(resized), shape: [1, 64, 64, 3] })
  const gap = Math.max(...direct.map((v, i) => Math.abs(v - out.embeddings[i]!)))
  t.true(gap < 1e-5, `embedFiles and alignFaces + embed differ by ${gap}`)

  calls = 0
  const all = await embedFiles(model, files, { align: { size: 112, detector, faces: 'all' } })
  t.deepEqual([...all.imageIndex], [0, 0, 2, 2])
  t.deepEqual([...all.faceIndex], [0, 1, 0, 1])
  t.deepEqual(all.noFace, [1])
  model.dispose()
})

test('ImageFolder align: crops are cached on disk once; photos without a face are left out, not thrown', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'facenet-folder-align-'))
  const cacheDir = join(root, '..', `${basename(root)}-cache`)
  const raw = { raw: { width: 160, height: 160, channels: 3 as const } }
  const { mkdir } = await import('node:fs/promises')
  for (const name of ['Ann', 'Bob']) {
    await mkdir(join(root, name))
    for (const k of [1, 2]) await sharp(Buffer.from(ramp(160, 160)), raw).png().toFile(join(root, name, `${name}_${k}.png`))
  }
  const seen: number[] = []
  let calls = 0
  const detector = {
    detect: async (images: { shape: readonly number[] }) => {
      calls += 1
      seen.push(images.shape[1]!)
      // Bob_2 (the 4th photo in code-point order) has no face.
      return [calls === 4 ? [] : [face(20, 30)]]
    },
  }
  const warnings: string[] = []
  const align = { size: 112, cacheDir, detector }
  const folder = await ImageFolder.open(root, { align, onWarning: (e) => warnings.push(e.message) })
  t.is(calls, 4)
  t.deepEqual(seen, [160, 160, 160, 160])
  t.deepEqual(folder.identities, ['Ann', 'Bob'])
  t.is(folder.length, 3)
  t.is(folder.skipped.length, 1)
  t.regex(folder.skipped[0]!.file, /Bob_2\.png$/)
  t.regex(warnings[0]!, /no face/)
  const input = folder.input(0)
  t.is(input.kind, 'file')
  const cropFile = (input as { path: string }).path
  t.true(cropFile.startsWith(cacheDir), cropFile)
  const crop = await sharp(cropFile).raw().toBuffer({ resolveWithObject: true })
  t.deepEqual([crop.info.width, crop.info.height], [112, 112])
  // The crop starts at the face's corner (20, 30) of the ramp (JPEG: within a few levels).
  t.true(Math.abs(crop.data[0]! - 20) <= 3 && Math.abs(crop.data[1]! - 30) <= 3, `got ${crop.data[0]}, ${crop.data[1]}`)

  // Opened again (a later epoch or run): nothing is detected, the no-face photo included.
  const again = await ImageFolder.open(root, { align, onWarning: () => {} })
  t.is(calls, 4)
  t.deepEqual(again.items.map((i) => i.crop), folder.items.map((i) => i.crop))
  t.is(again.skipped.length, 1)
  // Other options are another cache entry.
  await ImageFolder.open(root, { align: { ...align, size: 96 }, onWarning: () => {} })
  t.is(calls, 8)
})

test('a photo over maxPixels is downscaled before detection; boxes and landmarks come back in file pixels', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-align-big-'))
  const file = join(dir, 'big.png')
  // 400×300 of a ramp at half speed, so the 2× downscale is (nearly) the plain ramp.
  const half = new Uint8Array(400 * 300 * 3)
  for (let y = 0; y < 300; y++) for (let x = 0; x < 400; x++) half.set([x >> 1, y >> 1, 9], (y * 400 + x) * 3)
  await sharp(Buffer.from(half), { raw: { width: 400, height: 300, channels: 3 } }).png().toFile(file)
  const seen: number[][] = []
  const detector = {
    detect: async (images: { shape: readonly number[] }) => {
      seen.push([...images.shape])
      return [[face(30, 20)]]
    },
  }
  const out = await alignFaces([file], { size: 112, maxPixels: 200 * 150, detector })
  t.deepEqual(seen, [[1, 150, 200, 3]])
  t.deepEqual(out.detections[0]![0]!.box, [60, 40, 284, 264])
  t.deepEqual(out.detections[0]![0]!.landmarks[0], [TEMPLATE[0]![0]! * 2 + 60, TEMPLATE[0]![1]! * 2 + 40])
  const [r, g] = out.data
  t.true(Math.abs(r! - 30) <= 1 && Math.abs(g! - 20) <= 1, `crop starts at the face corner, got ${r}, ${g}`)
})
