/**
 * The pretrained dlib ResNet: the shipped weights equal dlib's .dat bit for bit, embeddings
 * equal dlib's own descriptors, and hostile .dat files are refused with the file and offset.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FaceNet, PRETRAINED_MODELS, WeightsError } from '../src'
import { pretrainedWeights } from '../src/model'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
/** dlib's models as `npm install` caches them (scripts/setup-libtorch.sh). */
const models = join(root, '.libtorch', 'dlib-models')
const dat = join(models, 'dlib_face_recognition_resnet_model_v1.dat')
const fixtures = join(__dirname, 'fixtures', 'dlib')
const dir = mkdtempSync(join(tmpdir(), 'facenet-dlib-'))

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

interface Descriptors {
  files: string[]
  descriptors: number[][]
}

function maxAbsDiff(a: Float32Array, b: readonly number[]): number {
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!))
  return max
}

test('the shipped model is the file its checksum names, with the .dat parameter count', async (t) => {
  const sums = readFileSync(join(root, 'weights', 'dlib-resnet-v1', 'SHA256SUMS'), 'utf8')
  const digest = createHash('sha256').update(readFileSync(pretrainedWeights('dlib-resnet-v1'))).digest('hex')
  t.true(sums.includes(`${digest}  model.safetensors`), sums)
  t.deepEqual(PRETRAINED_MODELS, ['dlib-resnet-v1'])
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads: 1 })
  const summary = await model.summary()
  t.is(summary.parameters, 5_614_592)
  t.deepEqual(summary.inputSize, { height: 150, width: 150 })
  t.is(model.info.normalization, 'dlib')
  t.is(model.metadata.threshold, '0.36')
  t.is(model.metadata.alignment, 'dlib')
})

test("the shipped tensors equal the .dat's float32 values bit for bit (an independent reader)", (t) => {
  const out = execFileSync(python, [join(__dirname, 'fixtures', 'dlib_params.py'), dat, pretrainedWeights('dlib-resnet-v1')], { encoding: 'utf8' })
  const check = JSON.parse(out) as { layers: number; floats: number; equal: boolean; mismatches: string[] }
  t.deepEqual(check.mismatches, [])
  t.true(check.equal)
  t.is(check.layers, 29 + 29 + 1)
  t.is(check.floats, 5_614_592)
})

test("embeddings of dlib's chips are within 1e-5 of dlib's compute_face_descriptor", async (t) => {
  const { files, descriptors } = JSON.parse(readFileSync(join(fixtures, 'descriptors.json'), 'utf8')) as Descriptors
  const chips = new Uint8Array(readFileSync(join(fixtures, 'chips.u8')))
  t.true(files.length >= 8)
  for (const load of [() => FaceNet.pretrained('dlib-resnet-v1', { threads: 1 }), () => FaceNet.load(dat, { threads: 1 })]) {
    using model = await load()
    const embedded = await model.embed({ data: chips, shape: [files.length, 150, 150, 3] })
    const diff = maxAbsDiff(embedded, descriptors.flat())
    t.log(`max |ours − dlib| over ${files.length} chips × 128: ${diff.toExponential(2)}`)
    t.true(diff <= 1e-5, `${diff}`)
    // Raw descriptors, as dlib's: not unit vectors.
    const norm = Math.hypot(...embedded.subarray(0, 128))
    t.true(norm > 1.2 && norm < 1.7, `${norm}`)
  }
})

test('a .dat converts to the same safetensors the package ships', async (t) => {
  using model = await FaceNet.load(dat, { threads: 1 })
  t.is(model.arch, 'dlib-resnet-v1')
  t.is(model.metadata.threshold, '0.36')
  const out = join(dir, 'converted.safetensors')
  await model.save(out)
  using again = await FaceNet.load(out, { threads: 1 })
  const chips = new Uint8Array(readFileSync(join(fixtures, 'chips.u8'))).subarray(0, 2 * 150 * 150 * 3)
  t.deepEqual(await again.embed({ data: chips, shape: [2, 150, 150, 3] }), await model.embed({ data: chips, shape: [2, 150, 150, 3] }))
})

test('hostile .dat files are WeightsErrors naming the file and the byte offset', async (t) => {
  const bytes = readFileSync(dat)
  const cases: [string, Uint8Array, RegExp][] = [
    ['truncated.dat', bytes.subarray(0, 300), /truncated\.dat: at byte \d+: .*(truncated|lies)/],
    ['cut-in-weights.dat', bytes.subarray(0, 1_000_000), /cut-in-weights\.dat: at byte \d+: /],
    ['lying-length.dat', Buffer.concat([bytes.subarray(0, 280), Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])]), /lying-length\.dat: at byte \d+: /],
  ]
  for (const [name, data, message] of cases) {
    const file = join(dir, name)
    writeFileSync(file, data)
    const error = await t.throwsAsync(FaceNet.load(file, { threads: 1 }), { instanceOf: WeightsError })
    t.regex(error!.message, message, name)
    t.is(error!.code, 'ERR_WEIGHTS')
  }
  const mmod = await t.throwsAsync(FaceNet.load(join(models, 'mmod_human_face_detector.dat'), { threads: 1 }), { instanceOf: WeightsError })
  t.regex(mmod!.message, /mmod_human_face_detector\.dat: at byte \d+: not a dlib metric network .*loss_mmod_/)
  const predictor = await t.throwsAsync(FaceNet.load(join(models, 'shape_predictor_5_face_landmarks.dat'), { threads: 1 }), { instanceOf: WeightsError })
  t.regex(predictor!.message, /shape_predictor_5_face_landmarks\.dat: at byte \d+: not a dlib metric network/)
  // Another arch asked of a dlib file.
  await t.throwsAsync(FaceNet.load(dat, { arch: 'nn4', threads: 1 }), { instanceOf: WeightsError, message: /dlib-resnet-v1.*not 'nn4'/ })
})
