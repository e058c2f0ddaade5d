import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Arch, FaceNet, ShapeError, WeightsError } from '../src'
import { pixels } from './helpers'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const dir = mkdtempSync(join(tmpdir(), 'facenet-weights-'))

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

interface PythonCheck {
  metadata: Record<string, string>
  count: number
  missing: string[]
  unexpected: string[]
  wrongShape: string[]
  dtypes: string[]
  parameters: number
  embeddings: number[] | null
}

/** Runs __test__/fixtures/check_safetensors.py on a file and the images we embedded. */
function checkInPython(file: string, images: Uint8Array, count: number): PythonCheck {
  const pixelsFile = `${file}.pixels`
  writeFileSync(pixelsFile, images)
  const out = execFileSync(python, [join(__dirname, 'fixtures', 'check_safetensors.py'), file, pixelsFile, String(count)], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  })
  return JSON.parse(out) as PythonCheck
}

/** Rewrites a safetensors file's metadata, keeping its tensors. */
function withMetadata(source: string, target: string, changes: Record<string, string>): void {
  const bytes = readFileSync(source)
  const headerLength = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, unknown>
  header.__metadata__ = { ...(header.__metadata__ as Record<string, string>), ...changes }
  let json = JSON.stringify(header)
  json += ' '.repeat((8 - (json.length % 8)) % 8)
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)))
  writeFileSync(target, Buffer.concat([length, Buffer.from(json), bytes.subarray(8 + headerLength)]))
}

const cases: Array<[Arch, number]> = [
  ['tiny', 64],
  ['nn2', 128],
  ['inception-resnet-v1', 512],
  ['iresnet18', 512],
]

for (const [arch, embeddingDim] of cases) {
  test.serial(`${arch}: save → load is bit-identical and Python reads every tensor`, async (t) => {
    const file = join(dir, `${arch}.safetensors`)
    using model = await FaceNet.create({ arch, embeddingDim, device: 'cpu', threads: 2, seed: 11, normalization: 'prewhiten' })
    const { height, width } = model.inputSize
    const images = pixels(3 * height * width * 3, 5)
    const before = await model.embed(images)
    await model.save(file)
    t.deepEqual(readdirSync(dir).filter((name) => name.includes('.tmp-')), [], 'no temporary file is left')

    using loaded = await FaceNet.load(file, { device: 'cpu', threads: 2 })
    t.deepEqual(loaded.info, model.info)
    const after = await loaded.embed(images)
    t.deepEqual(Buffer.from(after.buffer), Buffer.from(before.buffer), 'embeddings are bit-identical')

    const check = checkInPython(file, images, 3)
    t.like(check.metadata, {
      format: 'facenet-torch',
      arch,
      embeddingDim: String(embeddingDim),
      inputHeight: String(height),
      inputWidth: String(width),
      normalization: 'prewhiten',
      version: '0.1.0',
    })
    t.deepEqual(check.missing, [], 'tensors the PyTorch twin has and the file lacks')
    t.deepEqual(check.unexpected, [], 'tensors in the file the twin lacks')
    t.deepEqual(check.wrongShape, [])
    t.deepEqual(check.dtypes, ['torch.float32'])
    t.is(check.parameters, model.info.parameterCount)
    // The values: PyTorch with these weights embeds the images as we do.
    const theirs = check.embeddings!
    t.is(theirs.length, before.length)
    const worst = theirs.reduce((max, value, i) => Math.max(max, Math.abs(value - before[i]!)), 0)
    t.true(worst < 1e-4, `largest difference ${worst}`)
  })
}

test.serial('a plain facenet-pytorch-style InceptionResnetV1 state_dict loads without renaming', async (t) => {
  // Written by the PyTorch twin with safetensors.torch.save_file: no metadata, int64
  // num_batches_tracked counters and a logits classifier, as a converted facenet-pytorch
  // checkpoint has.
  const file = join(dir, 'facenet-pytorch.safetensors')
  const images = pixels(2 * 160 * 160 * 3, 21)
  const pixelsFile = `${file}.pixels`
  writeFileSync(pixelsFile, images)
  const out = execFileSync(
    python,
    [join(__dirname, 'fixtures', 'check_safetensors.py'), 'export', 'inception-resnet-v1', '512', file, pixelsFile, '2'],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  )
  const exported = JSON.parse(out) as { count: number; embeddings: number[] }

  // facenet-pytorch's tensor names say the arch; naming it gives the same model.
  using recognised = await FaceNet.load(file, { device: 'cpu', threads: 2 })
  t.like(recognised.info, { arch: 'inception-resnet-v1', embeddingDim: 512, normalization: 'fixed' })
  using model = await FaceNet.load(file, { device: 'cpu', threads: 2, arch: 'inception-resnet-v1' })
  t.like(model.info, { arch: 'inception-resnet-v1', embeddingDim: 512, normalization: 'fixed' })
  const ours = await model.embed(images)
  t.deepEqual(await recognised.embed(images), ours)
  t.is(ours.length, exported.embeddings.length)
  const worst = exported.embeddings.reduce((max, value, i) => Math.max(max, Math.abs(value - ours[i]!)), 0)
  t.true(worst < 1e-4, `largest difference ${worst}`)
})

test.serial('truncated, garbage and missing files are refused with WeightsError naming the file', async (t) => {
  const good = join(dir, 'good.safetensors')
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', threads: 1 })
  await model.save(good)
  const bytes = readFileSync(good)
  const truncated = join(dir, 'truncated.safetensors')
  writeFileSync(truncated, bytes.subarray(0, bytes.length - 1000))
  const garbage = join(dir, 'garbage.safetensors')
  writeFileSync(garbage, 'PK\u0003\u0004 this is a zip, or a pickle, or anything else')
  for (const bad of [truncated, garbage, join(dir, 'absent.safetensors')]) {
    const error = await t.throwsAsync(FaceNet.load(bad, { device: 'cpu' }), { instanceOf: WeightsError })
    t.is(error!.code, 'ERR_WEIGHTS')
    t.true(error!.message.includes(bad), error!.message)
  }
})

test.serial('a wrong arch or mismatched shapes are refused, naming the tensor', async (t) => {
  const file = join(dir, 'tiny-64.safetensors')
  using model = await FaceNet.create({ arch: 'tiny', embeddingDim: 64, device: 'cpu', threads: 1 })
  await model.save(file)

  const wrongArch = await t.throwsAsync(FaceNet.load(file, { device: 'cpu', arch: 'nn4' }), { instanceOf: WeightsError })
  t.regex(wrongArch!.message, /holds a 'tiny' model, not 'nn4'/)

  const lying = join(dir, 'lying.safetensors')
  withMetadata(file, lying, { embeddingDim: '32' })
  const shape = await t.throwsAsync(FaceNet.load(lying, { device: 'cpu' }), { instanceOf: ShapeError })
  t.regex(shape!.message, /lying\.safetensors: tensor 'bn\.bias' has shape \[64\] but the model needs \[32\]/)

  const other = join(dir, 'other.safetensors')
  withMetadata(file, other, { arch: 'nns2', inputHeight: '140', inputWidth: '116' })
  const foreign = await t.throwsAsync(FaceNet.load(other, { device: 'cpu' }), { instanceOf: WeightsError })
  t.regex(foreign!.message, /tensor '[^']+' is not a variable of a 'nns2' model/)
})

test.serial('saving into a missing folder rejects with WeightsError and leaves nothing behind', async (t) => {
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', threads: 1 })
  const target = join(dir, 'no-such-folder', 'model.safetensors')
  const error = await t.throwsAsync(model.save(target), { instanceOf: WeightsError })
  t.true(error!.message.includes('no-such-folder'), error!.message)
})
