import test from 'ava'
import {
  devices,
  DeviceUnavailableError,
  DisposedError,
  FaceNet,
  FaceNetError,
  InvalidArgumentError,
  ShapeError,
  UnknownArchError,
} from '../src'
import { pixels, rowNorms } from './helpers'

const SIDE = 220
const PER_IMAGE = SIDE * SIDE * 3

let shared: Promise<FaceNet> | undefined
const model = () => (shared ??= FaceNet.create({ arch: 'nn1', embeddingDim: 128, device: 'cpu', seed: 7 }))

test.after.always(async () => {
  if (shared) (await shared).dispose()
})

test('nn1 declares the notebook input and embedding sizes', async (t) => {
  const m = await model()
  t.is(m.arch, 'nn1')
  t.deepEqual(m.inputSize, { height: 220, width: 220 })
  t.is(m.embeddingDim, 128)
  t.is(m.device, 'cpu')
  t.is(m.info.parameterCount, 29_391_168)
})

test('embed returns N×128 vectors of unit norm', async (t) => {
  const m = await model()
  const out = await m.embed({ data: pixels(3 * PER_IMAGE, 1), shape: [3, SIDE, SIDE, 3] })
  t.true(out instanceof Float32Array)
  t.is(out.length, 3 * 128)
  for (const norm of rowNorms(out, 128)) t.true(Math.abs(norm - 1) < 1e-5, `norm ${norm}`)
})

test('the same image embedded twice gives identical vectors', async (t) => {
  const m = await model()
  const image = pixels(1 * PER_IMAGE, 2)
  const first = await m.embed(image)
  const second = await m.embed(image)
  t.deepEqual(Array.from(first), Array.from(second))
})

test('float32 pixels in 0..255 embed like the same uint8 pixels', async (t) => {
  const m = await model()
  const bytes = pixels(1 * PER_IMAGE, 3)
  const fromBytes = await m.embed(bytes)
  const fromFloats = await m.embed(Float32Array.from(bytes))
  t.deepEqual(Array.from(fromBytes), Array.from(fromFloats))
})

test("precision 'bf16' embeds under bfloat16 autocast: float32 unit vectors close to fp32's", async (t) => {
  const m = await model()
  const images = { data: pixels(2 * PER_IMAGE, 8), shape: [2, SIDE, SIDE, 3] as const }
  const full = await m.embed(images)
  const half = await m.embed(images, { precision: 'bf16' })
  t.true(half instanceof Float32Array)
  // Normalised again in float32 after autocast: a float32 unit vector on every CPU,
  // whatever its bf16 kernels round to.
  for (const norm of rowNorms(half, 128)) t.true(Math.abs(norm - 1) < 1e-5, `norm ${norm}`)
  t.notDeepEqual(Array.from(half), Array.from(full), 'bit-identical to fp32: autocast did not run')
  for (let row = 0; row < 2; row++) {
    let cosine = 0
    for (let i = row * 128; i < (row + 1) * 128; i++) cosine += full[i]! * half[i]!
    t.true(cosine > 0.99, `row ${row}: cosine ${cosine} between the fp32 and bf16 embeddings`)
  }
  await t.throwsAsync(m.embed(images, { precision: 'fp8' as 'bf16' }), { instanceOf: InvalidArgumentError, message: /fp8/ })
})

test('same seed gives identical outputs, another seed different ones', async (t) => {
  const image = pixels(2 * PER_IMAGE, 4)
  const embedWith = async (seed: number) => {
    const m = await FaceNet.create({ arch: 'nn1', device: 'cpu', seed })
    try {
      return Array.from(await m.embed(image))
    } finally {
      m.dispose()
    }
  }
  const [a, b, c] = await Promise.all([embedWith(11), embedWith(11), embedWith(12)])
  t.deepEqual(a, b)
  t.notDeepEqual(a, c)
})

test('timers keep firing while embed works on the model thread', async (t) => {
  const m = await model()
  const batch = pixels(16 * PER_IMAGE, 5)
  let ticks = 0
  const timer = setInterval(() => ticks++, 2)
  const started = Date.now()
  await m.embed(batch)
  const elapsed = Date.now() - started
  clearInterval(timer)
  // A blocked event loop would fire the interval at most once after the call returns.
  t.true(elapsed > 20, `embedding 16 NN1 images took only ${elapsed} ms; the check needs a longer call`)
  t.true(ticks >= 3, `only ${ticks} timer ticks during ${elapsed} ms of embedding`)
})

test('wrong input length is a ShapeError naming the lengths', async (t) => {
  const m = await model()
  const error = await t.throwsAsync(m.embed({ data: new Uint8Array(100), shape: [1, SIDE, SIDE, 3] }), {
    instanceOf: ShapeError,
  })
  t.is(error?.code, 'ERR_SHAPE')
  t.regex(error!.message, /100 values/)
  t.regex(error!.message, /145200/)
})

test('wrong image size is a ShapeError naming both sizes', async (t) => {
  const m = await model()
  const error = await t.throwsAsync(m.embed({ data: new Uint8Array(2 * 64 * 64 * 3), shape: [2, 64, 64, 3] }), {
    instanceOf: ShapeError,
  })
  t.regex(error!.message, /64×64/)
  t.regex(error!.message, /220×220/)
})

test('a bare array that is not whole images is a ShapeError', async (t) => {
  const m = await model()
  const error = await t.throwsAsync(m.embed(new Uint8Array(PER_IMAGE + 1)), { instanceOf: ShapeError })
  t.regex(error!.message, /145201 values/)
})

test('an unknown arch is an UnknownArchError naming it', async (t) => {
  const error = await t.throwsAsync(FaceNet.create({ arch: 'resnet-9000' as 'nn1' }), { instanceOf: UnknownArchError })
  t.is(error?.code, 'ERR_UNKNOWN_ARCH')
  t.regex(error!.message, /resnet-9000/)
  t.true(error instanceof FaceNetError)
  t.true(error instanceof Error)
})

test('an unavailable device is a DeviceUnavailableError naming it', async (t) => {
  const missing = `cuda:${devices().cudaDeviceCount + 3}` as const
  const error = await t.throwsAsync(FaceNet.create({ device: missing }), { instanceOf: DeviceUnavailableError })
  t.is(error?.code, 'ERR_DEVICE_UNAVAILABLE')
  t.true(error!.message.includes(missing))
})

test('bad option values are InvalidArgumentErrors naming the value', async (t) => {
  for (const [options, text] of [
    [{ embeddingDim: 0 }, 'embeddingDim'],
    [{ embeddingDim: 1.5 }, '1.5'],
    [{ seed: -1 }, '-1'],
    [{ threads: 0 }, 'threads'],
    [{ device: 'tpu' as 'cpu' }, "'tpu'"],
    [{ normalization: 'zscore' as 'fixed' }, "'zscore'"],
  ] as const) {
    const error = await t.throwsAsync(FaceNet.create(options), { instanceOf: InvalidArgumentError })
    t.true(error!.message.includes(text), `${error!.message} should name ${text}`)
  }
})

test('a call after dispose rejects with DisposedError, and dispose is idempotent', async (t) => {
  const m = await FaceNet.create({ device: 'cpu', seed: 1 })
  t.false(m.disposed)
  m.dispose()
  m.dispose()
  t.true(m.disposed)
  const error = await t.throwsAsync(m.embed(pixels(1 * PER_IMAGE, 6)), { instanceOf: DisposedError })
  t.is(error?.code, 'ERR_DISPOSED')
})

test('dispose while embed calls are queued rejects the queued ones cleanly', async (t) => {
  const m = await FaceNet.create({ device: 'cpu', seed: 1 })
  const image = pixels(4 * PER_IMAGE, 7)
  const calls = [m.embed(image), m.embed(image), m.embed(image)]
  m.dispose()
  const results = await Promise.allSettled(calls)
  for (const result of results) {
    if (result.status === 'rejected') t.true(result.reason instanceof DisposedError)
    else t.is(result.value.length, 4 * 128)
  }
  t.true(results.some((r) => r.status === 'rejected'))
})

test('`using` disposes the model at the end of the scope', async (t) => {
  let escaped: FaceNet | undefined
  {
    using m = await FaceNet.create({ device: 'cpu' })
    escaped = m
    t.false(m.disposed)
  }
  t.true(escaped.disposed)
})

test('devices() reports the CPU and whether CUDA is there', (t) => {
  const report = devices()
  t.true(report.cpu)
  t.is(typeof report.cudaAvailable, 'boolean')
  t.true(Number.isInteger(report.cudaDeviceCount))
  t.is(report.cudaAvailable, report.cudaDeviceCount > 0)
  t.is(report.libtorchVersion, '2.11.0')
})
