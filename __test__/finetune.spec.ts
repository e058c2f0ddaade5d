import test from 'ava'
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { ALIGNMENT_KEY, FaceNet, ImageFolder, InvalidArgumentError, THRESHOLD_KEY, Trainer } from '../src'
import { pretrainedWeights } from '../src/model'
import { LFW_IDENTITIES } from '../scripts/reliability-train'
import { startCli } from './helpers'

const root = resolve(__dirname, '..', 'data', 'lfw')
const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `facenet-finetune-${tag}-`))
let folder: Promise<ImageFolder> | undefined
const data = () => (folder ??= ImageFolder.open(root).then((f) => f.subset(LFW_IDENTITIES)))
const small = { identitiesPerBatch: 3, imagesPerIdentity: 4, negativesPerBatch: 0, augment: false as const, seed: 2 }

/** Each tensor's raw bytes in a safetensors file, by name. */
function tensors(file: string): Map<string, Buffer> {
  const bytes = readFileSync(file)
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString()) as Record<string, { data_offsets?: [number, number] }>
  const out = new Map<string, Buffer>()
  for (const [name, entry] of Object.entries(header)) {
    if (entry.data_offsets) out.set(name, bytes.subarray(8 + length + entry.data_offsets[0], 8 + length + entry.data_offsets[1]))
  }
  return out
}

test('trainLastBlocks 1 trains only the embedding layer: every other tensor of the saved fine-tune is bit-identical to the pretrained file', async (t) => {
  using model = await FaceNet.pretrained('dlib-resnet-v1', { device: 'cpu', threads: 1 })
  const trainer = new Trainer(model, { ...small, optimizer: 'sgd', lr: 0.05, trainLastBlocks: 1 })
  const result = await trainer.fit(await data(), { maxSteps: 2 })
  t.is(result.steps, 2)
  const file = join(tmp('frozen'), 'model.safetensors')
  await model.save(file)
  const before = tensors(pretrainedWeights('dlib-resnet-v1'))
  const after = tensors(file)
  t.deepEqual([...after.keys()].sort(), [...before.keys()].sort())
  for (const [name, bytes] of before) {
    if (name.startsWith('fc.')) t.false(bytes.equals(after.get(name)!), `${name} should have trained`)
    else t.true(bytes.equals(after.get(name)!), `${name} should be frozen`)
  }
  // The source model's preprocessing and input size come with it.
  const reloaded = await FaceNet.load(file, { device: 'cpu', threads: 1 })
  t.is(reloaded.info.normalization, 'dlib')
  t.deepEqual(reloaded.inputSize, { height: 150, width: 150 })
  // Its alignment too, with no metadata passed to save; dlib's threshold was for the old weights.
  t.is(reloaded.metadata[ALIGNMENT_KEY], 'dlib')
  t.is(reloaded.metadata[THRESHOLD_KEY], undefined)
  reloaded.dispose()
})

test('an untrained model re-saved is a copy: its loaded metadata (threshold included) comes along', async (t) => {
  using model = await FaceNet.pretrained('dlib-resnet-v1', { device: 'cpu', threads: 1 })
  const file = join(tmp('copy'), 'copy.safetensors')
  await model.save(file, { metadata: { note: 'mine' } })
  using copy = await FaceNet.load(file, { device: 'cpu', threads: 1 })
  t.deepEqual(copy.metadata, { ...model.metadata, note: 'mine' })
  t.is(copy.metadata[THRESHOLD_KEY], '0.36')
})

test('freeze by prefix: the named layers stay fixed, the rest moves, on a tiny model with batch norm', async (t) => {
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 4, threads: 1 })
  const dir = tmp('prefix')
  await model.save(join(dir, 'before.safetensors'))
  const trainer = new Trainer(model, { ...small, optimizer: 'sgd', lr: 0.05, freeze: ['stage0', 'stage1'], lrGroups: [{ prefixes: ['stage2'], lr: 0.005 }] })
  await trainer.fit(await data(), { maxSteps: 2 })
  await model.save(join(dir, 'after.safetensors'))
  const before = tensors(join(dir, 'before.safetensors'))
  const after = tensors(join(dir, 'after.safetensors'))
  for (const [name, bytes] of before) {
    const frozen = name.startsWith('stage0.') || name.startsWith('stage1.')
    // Frozen layers' batch-norm running statistics are held as well as their weights.
    t.is(bytes.equals(after.get(name)!), frozen, name)
  }
})

test('a freeze prefix that matches no parameter is refused before the first step, naming it and the blocks', async (t) => {
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 4, threads: 1 })
  let steps = 0
  const trainer = new Trainer(model, { ...small, freeze: ['units.99'] })
  const error = await t.throwsAsync(trainer.fit(await data(), { maxSteps: 2, onStep: () => steps++ }))
  t.is((error as InvalidArgumentError).code, 'ERR_INVALID_ARGUMENT')
  t.regex(error!.message, /'units\.99' matches no parameter/)
  t.regex(error!.message, /stage0, stage1/)
  t.is(steps, 0)
  const tooMany = new Trainer(model, { ...small, trainLastBlocks: 50 })
  await t.throwsAsync(tooMany.fit(await data(), { maxSteps: 1 }), { message: /trainLastBlocks must be between 1 and 6/ })
  t.throws(() => new Trainer(model, { lrGroups: [{ prefixes: [], lr: 0.1 }] }), { instanceOf: InvalidArgumentError, message: /lrGroups\[0\]\.prefixes/ })
})

test('harmonic training: v1 only embeds (its weights stay), v2 of another width trains on triplets mixing both', async (t) => {
  using v1 = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed: 1, threads: 1 })
  using v2 = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed: 2, threads: 1, tiny: { widths: [16, 32, 64] } })
  const dir = tmp('harmonic')
  await v1.save(join(dir, 'v1-before.safetensors'))
  const trainer = new Trainer(v2, { ...small, harmonic: { with: v1 } })
  const steps: number[] = []
  await trainer.fit(await data(), { maxSteps: 2, onStep: (s) => steps.push(s.triplets) })
  // 3 identities × 4 images, both versions: far more triplets than one version alone has.
  t.true(steps.every((n) => n > 0))
  await v1.save(join(dir, 'v1-after.safetensors'))
  const before = tensors(join(dir, 'v1-before.safetensors'))
  const after = tensors(join(dir, 'v1-after.safetensors'))
  for (const [name, bytes] of before) t.true(bytes.equals(after.get(name)!), name)
})

test('a harmonic v1 of another embedding dimension or input size is refused when the trainer is built', async (t) => {
  using v1 = await FaceNet.create({ arch: 'tiny', embeddingDim: 16, device: 'cpu', threads: 1 })
  using v2 = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', threads: 1 })
  using other = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', threads: 1, tiny: { inputSize: 96 } })
  t.throws(() => new Trainer(v2, { harmonic: { with: v1 } }), { instanceOf: InvalidArgumentError, message: /16-d vectors .*32-d/ })
  t.throws(() => new Trainer(v2, { harmonic: { with: other } }), { instanceOf: InvalidArgumentError, message: /96×96 .*64×64/ })
  t.throws(() => new Trainer(v2, { harmonic: { with: v2 } }), { instanceOf: InvalidArgumentError, message: /not the model being trained/ })
})

test('facenet train --from keeps the source model\'s shape and alignment and stores a threshold chosen on held-out identities', async (t) => {
  const dir = tmp('cli')
  const faces = join(dir, 'faces')
  for (const name of ['Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair', 'Ariel_Sharon']) {
    for (const file of readdirSync(join(root, name)).sort().slice(0, 5)) cpSync(join(root, name, file), join(faces, name, file))
  }
  const source = join(dir, 'source.safetensors')
  {
    using model = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed: 7, threads: 1, tiny: { inputSize: 48 } })
    await model.save(source, { metadata: { alignment: 'dlib', threshold: '9' } })
  }
  const out = join(dir, 'run')
  const flags = ['--data', faces, '--batch-identities', '3', '--batch-images', '4', '--negatives', '0', '--max-steps', '2', '--device', 'cpu', '--threads', '1']
  const run = await startCli(['train', '--from', source, '--train-last-blocks', '2', '--holdout', '2', ...flags, '--out', out]).done
  t.is(run.code, 0, run.stderr)
  t.regex(run.stderr, /threshold [\d.]+ chosen on \d+ pairs of 2 held-out identities/)
  using tuned = await FaceNet.load(join(out, 'model.safetensors'), { device: 'cpu', threads: 1 })
  t.deepEqual(tuned.inputSize, { height: 48, width: 48 })
  t.is(tuned.embeddingDim, 32)
  t.is(tuned.metadata.alignment, 'dlib')
  t.not(tuned.metadata.threshold, '9')
  t.true(Number(tuned.metadata.threshold) > 0)
  t.regex(tuned.metadata.thresholdFrom!, /held-out pairs of 2 identities/)

  const notModel = join(dir, 'notes.txt')
  writeFileSync(notModel, 'not a model')
  const bad = await startCli(['train', '--from', notModel, ...flags, '--out', join(dir, 'bad')]).done
  t.not(bad.code, 0)
  t.regex(bad.stderr, /notes\.txt/)
  t.false(existsSync(join(dir, 'bad', 'checkpoints')))
  const shaped = await startCli(['train', '--from', source, '--arch', 'tiny', ...flags, '--out', join(dir, 'shaped')]).done
  t.is(shaped.code, 2)
  t.regex(shaped.stderr, /--from keeps the source model's shape; drop --arch/)
})
