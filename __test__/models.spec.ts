import test from 'ava'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Arch, FaceNet, InvalidArgumentError, UnknownArchError } from '../src'
import { pixels, rowNorms } from './helpers'

/** Every arch with the input size (height × width) it must declare. */
const ARCHS: Array<[Arch, number, number]> = [
  ['tiny', 64, 64],
  ['nn1', 220, 220],
  ['nn1-paper', 220, 220],
  ['nn2', 224, 224],
  ['nn3', 160, 160],
  ['nn4', 96, 96],
  ['nns1', 165, 165],
  ['nns2', 140, 116],
  ['inception-resnet-v1', 160, 160],
  ['iresnet18', 112, 112],
  ['iresnet34', 112, 112],
  ['iresnet50', 112, 112],
]

for (const [arch, height, width] of ARCHS) {
  test.serial(`${arch}: declares ${height}×${width}, embeds unit vectors, summarizes itself`, async (t) => {
    using model = await FaceNet.create({ arch, embeddingDim: 64, device: 'cpu', threads: 2 })
    t.is(model.arch, arch)
    t.deepEqual(model.inputSize, { height, width })
    const out = await model.embed({ data: pixels(2 * height * width * 3, 9), shape: [2, height, width, 3] })
    t.is(out.length, 2 * 64)
    for (const norm of rowNorms(out, 64)) t.true(Math.abs(norm - 1) < 1e-4, `norm ${norm}`)

    const summary = await model.summary()
    t.is(summary.arch, arch)
    t.is(summary.embeddingDim, 64)
    t.deepEqual(summary.inputSize, { height, width })
    t.is(summary.parameters, model.info.parameterCount)
    t.is(
      summary.layers.reduce((sum, layer) => sum + layer.params, 0),
      summary.parameters,
      'the layer table accounts for every parameter',
    )
    t.is(
      summary.layers.reduce((sum, layer) => sum + layer.multiplyAdds, 0),
      summary.multiplyAdds,
    )
    t.deepEqual(summary.layers.at(-1)!.output, [64])
  })
}

test.serial('tiny embeds at 64, 128, 256 and 512 dimensions', async (t) => {
  for (const embeddingDim of [64, 128, 256, 512]) {
    using model = await FaceNet.create({ arch: 'tiny', embeddingDim, device: 'cpu', threads: 2 })
    const out = await model.embed(pixels(3 * 64 * 64 * 3, embeddingDim))
    t.is(out.length, 3 * embeddingDim)
    for (const norm of rowNorms(out, embeddingDim)) t.true(Math.abs(norm - 1) < 1e-4, `norm ${norm}`)
  }
})

test.serial("summaries match the paper's parameter and FLOP figures within 15%", async (t) => {
  // Tables 1 and 2 and section 4 of Schroff et al. 2015 (128-d embeddings).
  const paper: Array<[Arch, number | undefined, number]> = [
    ['nn1-paper', 140e6, 1.6e9],
    ['nn2', 7.5e6, 1.6e9],
    ['nn4', undefined, 285e6],
    ['nns1', 26e6, 220e6],
    ['nns2', 4.3e6, 20e6],
  ]
  for (const [arch, params, flops] of paper) {
    using model = await FaceNet.create({ arch, device: 'cpu', threads: 2 })
    const summary = await model.summary()
    if (params !== undefined) {
      const ratio = summary.parameters / params
      t.true(ratio > 0.85 && ratio < 1.15, `${arch} params ${summary.parameters} (${ratio.toFixed(3)}×)`)
    }
    const ratio = summary.multiplyAdds / flops
    t.true(ratio > 0.85 && ratio < 1.15, `${arch} FLOPs ${summary.multiplyAdds} (${ratio.toFixed(3)}×)`)
  }
})

test.serial("nn2's layer table follows Table 2", async (t) => {
  using model = await FaceNet.create({ arch: 'nn2', device: 'cpu', threads: 2 })
  const layers = new Map((await model.summary()).layers.map((layer) => [layer.name, layer]))
  t.deepEqual(layers.get('inception_3b.concat')?.output, [320, 28, 28])
  t.deepEqual(layers.get('inception_4e.concat')?.output, [1024, 7, 7])
  t.is(layers.get('inception_3b.pool')?.kind, 'l2pool 3×3')
  t.is(layers.get('inception_3c.pool')?.kind, 'maxpool 3×3/2')
  t.is(layers.get('inception_5b.pool')?.kind, 'maxpool 3×3')
  // Table 2's 5a row: 1.6M parameters (plus batch norm), 78M multiply-adds.
  const module5a = [...layers.values()].filter((layer) => layer.name.startsWith('inception_5a.'))
  const macs = module5a.reduce((sum, layer) => sum + layer.multiplyAdds, 0)
  t.is(macs, 1_587_200 * 49)
})

test('an unknown arch is refused with the known ones listed', async (t) => {
  const error = await t.throwsAsync(FaceNet.create({ arch: 'nn9' as Arch, device: 'cpu' }), {
    instanceOf: UnknownArchError,
  })
  t.regex(error!.message, /inception-resnet-v1/)
})

test.serial('tiny takes its widths and input size; a saved file brings them back', async (t) => {
  using model = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', threads: 1, tiny: { widths: [16, 32, 48], inputSize: { height: 96, width: 80 } } })
  t.deepEqual(model.inputSize, { height: 96, width: 80 })
  t.deepEqual(model.info.tinyWidths, [16, 32, 48])
  const summary = await model.summary()
  t.deepEqual(summary.layers.find((l) => l.name === 'stage2.conv1')?.output.slice(0, 1), [48])
  t.is(summary.layers.find((l) => l.name === 'stage3.conv1'), undefined, 'three stages only')
  const images = pixels(2 * 96 * 80 * 3, 4)
  const before = await model.embed({ data: images, shape: [2, 96, 80, 3] })
  for (const norm of rowNorms(before, 32)) t.true(Math.abs(norm - 1) < 1e-4)

  const dir = mkdtempSync(join(tmpdir(), 'facenet-tiny-'))
  const file = join(dir, 'tiny.safetensors')
  await model.save(file)
  using loaded = await FaceNet.load(file, { device: 'cpu', threads: 1 })
  t.deepEqual(loaded.info, model.info)
  t.deepEqual(await loaded.embed({ data: images, shape: [2, 96, 80, 3] }), before)
})

test('tiny shapes are checked, and refused for the other archs', async (t) => {
  await t.throwsAsync(FaceNet.create({ arch: 'tiny', tiny: { widths: [32] } }), { instanceOf: InvalidArgumentError, message: /2 to 8 channel counts/ })
  await t.throwsAsync(FaceNet.create({ arch: 'tiny', tiny: { widths: [32, 0] } }), { instanceOf: InvalidArgumentError, message: /tiny\.widths\[1\]/ })
  await t.throwsAsync(FaceNet.create({ arch: 'tiny', tiny: { inputSize: 8 } }), { message: /from 16 to 1024 pixels a side, got 8×8/ })
  await t.throwsAsync(FaceNet.create({ arch: 'nn4', tiny: { widths: [8, 8] } }), { instanceOf: InvalidArgumentError, message: /shapes arch 'tiny', not 'nn4'/ })
})
