import test from 'ava'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { DataError, FaceNet, ImageFolder, InvalidArgumentError, Trainer, type StepResult, type TrainerOptions } from '../src'
import { LFW_IDENTITIES } from '../scripts/reliability-train'

const root = resolve(__dirname, '..', 'data', 'lfw')
const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `facenet-losses-${tag}-`))

/** Six LFW identities with many images plus four with one image each. */
let folder: Promise<{ data: ImageFolder; singles: string[] }> | undefined
const lfw = () =>
  (folder ??= ImageFolder.open(root).then((all) => {
    const counts = new Map<number, number>()
    for (const label of all.labels) counts.set(label, (counts.get(label) ?? 0) + 1)
    const singles = all.identities.filter((_, label) => counts.get(label) === 1).slice(0, 4)
    return { data: all.subset([...LFW_IDENTITIES, ...singles]), singles }
  }))

const base: TrainerOptions = { optimizer: 'sgd', momentum: 0.9, lr: 0.01, identitiesPerBatch: 3, imagesPerIdentity: 3, negativesPerBatch: 2, batchSize: 12, seed: 5, augment: false }

async function run(options: TrainerOptions, steps: number, extra: { resume?: string } = {}): Promise<{ results: StepResult[]; model: FaceNet; trainer: Trainer }> {
  const model = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  const trainer = new Trainer(model, options)
  const results: StepResult[] = []
  await trainer.fit((await lfw()).data, { epochs: 1000, maxSteps: steps, onStep: (s) => results.push(s), ...extra })
  return { results, model, trainer }
}

test('ArcFace trains on shuffled batches of batchSize over every image, single-image identities included', async (t) => {
  const { data, singles } = await lfw()
  const singleLabels = new Set(singles.map((name) => data.identities.indexOf(name)))
  const seen = new Set<number>()
  const model = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  const trainer = new Trainer(model, { ...base, lr: 0.05, loss: { type: 'arcface', margin: 0.3, scale: 16 } })
  const results: StepResult[] = []
  for await (const step of trainer.steps(data, { epochs: 1000, maxSteps: 12 })) results.push(step)
  // Every image is drawn once per epoch: an epoch is ⌈N / batchSize⌉ batches.
  t.is(results.filter((s) => s.epoch === 0).length, Math.ceil(data.labels.length / 12))
  t.true(results.every((s) => s.images === 12 && s.tripletLoss === 0 && s.triplets === 0 && s.classLoss === s.loss))
  // The single-image identities reach the loss as classes of their own.
  const sampler = new (await import('../src')).ShuffleSampler(data, { batchSize: 12, seed: 5 })
  for (const batch of sampler.epochBatches()) for (const label of batch.labels) seen.add(label)
  t.true([...singleLabels].every((label) => seen.has(label)))
  const first = results.slice(0, 3).reduce((a, s) => a + s.loss, 0) / 3
  const last = results.slice(-3).reduce((a, s) => a + s.loss, 0) / 3
  t.true(last < first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`)
  model.dispose()
})

test('a weighted sum adds tripletWeight × the triplet loss and trains on P×K batches', async (t) => {
  const { results, model } = await run({ ...base, loss: { type: 'cosface', tripletWeight: 0.5 } }, 3)
  for (const s of results) {
    t.true(s.classLoss > 0 && s.tripletLoss > 0 && s.triplets > 0)
    t.true(Math.abs(s.loss - (s.classLoss + 0.5 * s.tripletLoss)) < 1e-4, `${s.loss} vs ${s.classLoss} + 0.5·${s.tripletLoss}`)
    // P×K: 3 identities × 3 images + 2 single-image negatives.
    t.is(s.images, 11)
  }
  model.dispose()
})

test('a schedule switches from a softmax-centre warm-up to triplets at its step, and the epoch ends there', async (t) => {
  const loss: TrainerOptions['loss'] = [{ type: 'softmax-center' }, { type: 'triplet', fromStep: 3 }]
  const { results, model } = await run({ ...base, loss }, 5)
  t.deepEqual(
    results.map((s) => [s.step, s.epoch, s.classLoss > 0, s.tripletLoss > 0]),
    [
      [1, 0, true, false],
      [2, 0, true, false],
      [3, 0, true, false],
      [4, 1, false, true],
      [5, 1, false, true],
    ],
  )
  model.dispose()
})

test("cosine's default length is the steps fit runs, epochs cut at a schedule switch counted as run", async (t) => {
  const { data } = await lfw()
  const loss: TrainerOptions['loss'] = [{ type: 'softmax-center' }, { type: 'triplet', fromStep: 3 }]
  const model = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  const trainer = new Trainer(model, { ...base, loss, schedule: { type: 'cosine' } })
  const results: StepResult[] = []
  await trainer.fit(data, { epochs: 2, onStep: (s) => results.push(s) })
  const pk = new (await import('../src')).PKSampler(data, { P: 3, K: 3, negatives: 2, seed: 5 })
  // Epoch 0 is cut at step 3, where the batches switch; epoch 1 is a whole P×K epoch.
  const total = 3 + pk.batchesPerEpoch
  t.is(results.length, total)
  // Each step's rate is the cosine at its 0-based index over `total` steps, down to 0.
  results.forEach((s, i) => t.true(Math.abs(s.lr - 0.005 * (1 + Math.cos((Math.PI * i) / total))) < 1e-9, `step ${s.step}: lr ${s.lr}`))
  model.dispose()
  const epochMined = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  await t.throwsAsync(new Trainer(epochMined, { ...base, mining: 'epoch', schedule: { type: 'cosine' } }).fit(data, { epochs: 1 }), {
    instanceOf: InvalidArgumentError,
    message: /mining 'epoch' needs schedule\.totalSteps or fit's maxSteps/,
  })
  epochMined.dispose()
})

test('resuming a classification run repeats the uninterrupted one exactly, the class head included', async (t) => {
  const loss: TrainerOptions['loss'] = [{ type: 'arcface', scale: 16, tripletWeight: 0.2 }, { type: 'triplet', fromStep: 5 }]
  const straightDir = tmp('straight')
  const straight = await run({ ...base, loss, checkpointDir: straightDir, checkpointEvery: 3, keepCheckpoints: 20 }, 7)
  straight.model.dispose()
  const resumed = await run({ ...base, loss, checkpointDir: tmp('resumed') }, 7, { resume: join(straightDir, 'step-00000003.ckpt') })
  t.deepEqual(
    resumed.results.map((s) => [s.step, s.loss]),
    straight.results.slice(3).map((s) => [s.step, s.loss]),
  )
  // The checkpoint holds the head; a model saved from the run does not.
  const header = (file: string) => {
    const bytes = readFileSync(file)
    return Object.keys(JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString()) as Record<string, unknown>)
  }
  t.true(header(join(straightDir, 'step-00000003.ckpt')).includes('class_head.weights'))
  const saved = join(tmp('saved'), 'model.safetensors')
  await resumed.model.save(saved)
  t.false(header(saved).some((name) => name.startsWith('class_head.') || name.startsWith('optimizer.')))
  resumed.model.dispose()
})

test('a resumed checkpoint with another class count is refused before training, the model untouched', async (t) => {
  const dir = tmp('classes')
  const first = await run({ ...base, loss: { type: 'arcface' }, checkpointDir: dir }, 2)
  first.model.dispose()
  const model = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  const before = await model.embed(new Uint8Array(64 * 64 * 3).fill(100))
  const fewer = (await lfw()).data.subset(LFW_IDENTITIES)
  const trainer = new Trainer(model, { ...base, loss: { type: 'arcface' } })
  const error = await t.throwsAsync(trainer.fit(fewer, { maxSteps: 4, resume: join(dir, 'step-00000002.ckpt') }), { instanceOf: InvalidArgumentError })
  t.regex(error!.message, /10 identities.*this data has 6/)
  t.deepEqual(await model.embed(new Uint8Array(64 * 64 * 3).fill(100)), before)
  model.dispose()
})

test('bad loss options and data are refused before training starts', async (t) => {
  const model = await FaceNet.create({ arch: 'tiny', seed: 1, threads: 1 })
  const refused = (loss: unknown, pattern: RegExp) => t.throws(() => new Trainer(model, { loss: loss as TrainerOptions['loss'] }), { instanceOf: InvalidArgumentError, message: pattern })
  refused({ type: 'arcface', margin: 2 }, /loss\.margin must be a number in \[0, 1\.5708\), got 2/)
  refused({ type: 'arcface', scale: 0 }, /loss\.scale/)
  refused({ type: 'arcface', scale: Number.NaN }, /loss\.scale/)
  refused({ type: 'cosface', margin: -0.1 }, /loss\.margin/)
  refused({ type: 'softmax-center', centerWeight: -1 }, /centerWeight/)
  refused({ type: 'arcface', tripletWeight: -1 }, /tripletWeight/)
  refused({ type: 'arcfac' }, /'triplet', 'arcface', 'cosface' or 'softmax-center'/)
  refused({ type: 'cosface', easyMargin: true }, /easyMargin/)
  refused([{ type: 'arcface' }, { type: 'triplet' }], /loss\[1\]\.fromStep/)
  refused([{ type: 'arcface' }, { type: 'triplet', fromStep: 0 }], /above the previous/)
  refused([], /at least one phase/)
  t.throws(() => new Trainer(model, { mining: 'epoch', loss: { type: 'arcface' } }), { message: /mining 'online'/ })
  t.throws(() => new Trainer(model, { loss: { type: 'arcface' }, batchSize: 1 }), { message: /batchSize must be an integer ≥ 2/ })
  const one = (await lfw()).data.subset(['George_W_Bush'])
  const error = await t.throwsAsync(new Trainer(model, { loss: { type: 'cosface' } }).fit(one, { maxSteps: 1 }), { instanceOf: DataError })
  t.regex(error!.message, /1 identity; a classification loss \('cosface'\) needs at least 2 identities/)
  model.dispose()
})

test('facenet train --loss arcface --margin --scale trains, stores the recipe in config.json, and --resume reuses it', async (t) => {
  const { startCli } = await import('./helpers')
  const out = join(tmp('cli'), 'run')
  const data = tmp('cli-data')
  const { cpSync } = await import('node:fs')
  for (const name of LFW_IDENTITIES.slice(0, 3)) cpSync(join(root, name), join(data, name), { recursive: true })
  const common = ['--data', data, '--arch', 'tiny', '--threads', '1', '--out', out, '--batch-size', '16', '--no-augment']
  const first = await startCli(['train', ...common, '--loss', 'arcface', '--margin', '0.3', '--scale', '16', '--triplet-from', '3', '--max-steps', '2']).done
  t.is(first.code, 0, first.stderr)
  t.regex(first.stderr, /with the arcface loss, triplet alone from step 3/)
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>
  t.like(config, { loss: 'arcface', margin: 0.3, scale: 16, tripletFrom: 3, batchSize: 16 })
  const resumed = await startCli(['train', '--out', out, '--resume', '--max-steps', '4', '--json']).done
  t.is(resumed.code, 0, resumed.stderr)
  const log = readFileSync(join(out, 'train.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { type: string; step: number; classLoss: number; tripletLoss: number })
  const steps = log.filter((l) => l.type === 'step')
  t.deepEqual(steps.map((l) => [l.step, l.classLoss > 0, l.tripletLoss > 0]), [
    [1, true, false],
    [2, true, false],
    [3, true, false],
    [4, false, true],
  ])

  const wrong = await startCli(['train', '--data', data, '--out', join(tmp('cli2'), 'x'), '--scale', '30']).done
  t.is(wrong.code, 2)
  t.regex(wrong.stderr, /--scale applies to --loss arcface or cosface, not 'triplet'/)
  const range = await startCli(['train', '--data', data, '--out', join(tmp('cli3'), 'x'), '--loss', 'arcface', '--margin', '1.6']).done
  t.is(range.code, 2)
  t.regex(range.stderr, /(^|\s)--margin must be a number in \[0, 1\.5708\), got 1\.6/)
})
