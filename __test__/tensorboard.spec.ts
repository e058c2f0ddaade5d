import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { startCli } from './helpers'
import { decodeImages, FaceNet, ImageFolder, OutputError, Trainer, type Validation } from '../src'

const root = resolve(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const lfw = join(root, 'data', 'lfw')
const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `facenet-tensorboard-${tag}-`))
const IDENTITIES = ['Ariel_Sharon', 'Colin_Powell', 'George_W_Bush', 'Tony_Blair']
const small = { identitiesPerBatch: 2, imagesPerIdentity: 3, negativesPerBatch: 0, lr: 0.01 }

/** 4 images each of 4 LFW identities, in a folder of their own: an epoch of two 2×3 batches. */
function smallFolder(): string {
  const dir = tmp('data')
  for (const name of IDENTITIES) {
    mkdirSync(join(dir, name))
    const files = readdirSync(join(lfw, name)).sort().slice(0, 4)
    for (const file of files) cpSync(join(lfw, name, file), join(dir, name, file))
  }
  return dir
}

/** Every pair of the folder's images, labelled same or different, and each image's identity. */
async function validationOf(folder: ImageFolder, model: FaceNet): Promise<Validation> {
  const images = await decodeImages(folder.items.map((item) => item.path), model.inputSize)
  const pairs = []
  for (let a = 0; a < folder.items.length; a++) {
    for (let b = a + 1; b < folder.items.length; b++) pairs.push({ a, b, same: folder.items[a]!.label === folder.items[b]!.label })
  }
  return { images, pairs, labels: folder.items.map((item) => item.identity) }
}

/** What TensorBoard's own event reader (EventAccumulator, which checks each record's CRCs) finds in `dir`. */
const READER = `
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0, 'histograms': 0, 'images': 0, 'tensors': 0})
acc.Reload()
tags = acc.Tags()
out = {
  # JSON has no NaN: null stands for it.
  'scalars': {t: [[e.step, e.value if math.isfinite(e.value) else None] for e in acc.Scalars(t)] for t in tags['scalars']},
  'histograms': {t: [[e.step, e.histogram_value.num, e.histogram_value.min, e.histogram_value.max, sum(e.histogram_value.bucket)] for e in acc.Histograms(t)] for t in tags['histograms']},
  'images': {t: [[e.step, e.width, e.height, e.encoded_image_string[:8].hex()] for e in acc.Images(t)] for t in tags['images']},
  'texts': {t: [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(t)] for t in tags['tensors']},
  'text_plugin': sorted(acc.PluginTagToContent('text').keys()),
}
print(json.dumps(out))
`

interface Read {
  scalars: Record<string, [number, number | null][]>
  histograms: Record<string, [number, number, number, number, number][]>
  images: Record<string, [number, number, number, string][]>
  texts: Record<string, string[]>
  text_plugin: string[]
}

const readBack = (dir: string): Read => JSON.parse(execFileSync(python, ['-c', READER, dir], { encoding: 'utf8' })) as Read

test('a run with tensorboard writes event files that TensorBoard reads back: scalars, histograms, ROC image, config text, projector', async (t) => {
  const folder = await ImageFolder.open(smallFolder())
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 5 })
  const validation = await validationOf(folder, model)
  const board = tmp('logs')
  const trainer = new Trainer(model, { ...small, tensorboard: board })
  const steps: number[] = []
  const result = await trainer.fit(folder, { epochs: 1, validation, onStep: (s) => steps.push(s.step) })
  t.is(result.stopped, 'completed')
  const files = readdirSync(board).filter((name) => name.startsWith('events.out.tfevents.'))
  t.is(files.length, 1)

  const read = readBack(board)
  // Every step's loss, learning rate, triplets and throughput, at the steps the run reported.
  for (const tag of ['loss/total', 'loss/triplet', 'triplets/active', 'triplets/active_fraction', 'train/learning_rate', 'train/images_per_second']) {
    t.deepEqual(read.scalars[tag]?.map(([step]) => step), steps, tag)
  }
  t.is(read.scalars['loss/class'], undefined, 'a triplet-only run has no classification part')
  t.true(read.scalars['train/learning_rate']!.every(([, lr]) => Math.abs(lr! - 0.01) < 1e-6))
  // Validation once, at the epoch's end, with the numbers fit returned (a float32 each; VAL is
  // NaN where 120 pairs reach no FAR of 1e-3, and is written so).
  const v = result.lastValidation!
  const float32 = (x: number) => (Number.isFinite(x) ? Math.fround(x) : null)
  t.deepEqual(read.scalars['validation/accuracy'], [[steps.at(-1)!, float32(v.accuracy.mean)]])
  t.deepEqual(read.scalars['validation/val_at_far_0.001'], [[steps.at(-1)!, float32(v.val.mean)]])
  t.deepEqual(read.scalars['validation/auc'], [[steps.at(-1)!, float32(v.auc)]])

  // Histograms: a norm per image (the tiny arch ends in an L2 layer), a distance per triplet.
  const norms = read.histograms['embeddings/norm']!
  t.deepEqual(norms.map(([step]) => step), steps)
  for (const [, num, min, max, counted] of norms) {
    t.is(num, 6)
    t.is(counted, 6)
    t.true(Math.abs(min - 1) < 1e-4 && Math.abs(max - 1) < 1e-4)
  }
  const active = read.scalars['triplets/mined']!
  for (const tag of ['distances/positive', 'distances/negative']) {
    t.deepEqual(read.histograms[tag]!.map(([step, num]) => [step, num]), active.map(([step, mined]) => [step, mined]), tag)
  }
  const sameCount = validation.pairs.filter((p) => (p as { same: boolean }).same).length
  t.is(read.histograms['validation/distance_same']![0]![1], sameCount)
  t.is(read.histograms['validation/distance_different']![0]![1], validation.pairs.length - sameCount)

  // The ROC as a PNG, and the run's options as text in the Text tab.
  const [roc] = read.images['validation/roc']!
  t.is(roc![3], '89504e470d0a1a0a', 'PNG signature')
  t.true(roc![1] > 100 && roc![2] > 100)
  t.deepEqual(read.text_plugin, ['config'])
  const config = JSON.parse(read.texts['config']![0]!.replace(/^ {4}/gm, '')) as { trainer: { lr: number; identitiesPerBatch: number }; model: { arch: string } }
  t.is(config.trainer.identitiesPerBatch, 2)
  t.is(config.model.arch, 'tiny')

  // The projector: one row per validation image with its embedding, label and thumbnail.
  const projector = readFileSync(join(board, 'projector_config.pbtxt'), 'utf8')
  t.regex(projector, /tensor_path: "projector\/tensors.tsv"/)
  t.regex(projector, /metadata_path: "projector\/metadata.tsv"/)
  t.regex(projector, /image_path: "projector\/sprite.png"/)
  const rows = readFileSync(join(board, 'projector', 'tensors.tsv'), 'utf8').trimEnd().split('\n')
  t.is(rows.length, folder.length)
  t.true(rows.every((row) => row.split('\t').length === model.embeddingDim && row.split('\t').every((x) => Number.isFinite(Number(x)))))
  t.deepEqual(readFileSync(join(board, 'projector', 'metadata.tsv'), 'utf8').trimEnd().split('\n'), validation.labels)
  // The sprite: ⌈√16⌉ = 4 columns and rows of thumbnails of single_image_dim each.
  const dims = [...projector.matchAll(/single_image_dim: (\d+)/g)].map((m) => Number(m[1]))
  const size = execFileSync(python, ['-c', 'import sys; from PIL import Image; print(*Image.open(sys.argv[1]).size)', join(board, 'projector', 'sprite.png')], { encoding: 'utf8' })
  t.deepEqual(size.trim().split(' ').map(Number), [4 * dims[0]!, 4 * dims[1]!])
})

test('a resumed run hides the steps after its checkpoint that the interrupted run had logged', async (t) => {
  const folder = await ImageFolder.open(smallFolder())
  const board = tmp('resume')
  const checkpointDir = tmp('ckpt')
  {
    using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 5 })
    await new Trainer(model, { ...small, tensorboard: board, checkpointDir, checkpointEvery: 1 }).fit(folder, { epochs: 2, maxSteps: 3 })
  }
  // As if the run had gone on to step 3 after a checkpoint at step 2, then died.
  const resume = join(checkpointDir, 'step-00000002.ckpt')
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 5 })
  await new Trainer(model, { ...small, tensorboard: board, checkpointDir }).fit(folder, { epochs: 2, maxSteps: 4, resume })
  t.is(readdirSync(board).filter((name) => name.startsWith('events.out.tfevents.')).length, 2)
  const losses = readBack(board).scalars['loss/total']!
  t.deepEqual(losses.map(([step]) => step), [1, 2, 3, 4], 'step 3 once: the resumed run\'s, not both')
})

test('a tensorboard directory that cannot be created is refused before any step, naming it', async (t) => {
  const folder = await ImageFolder.open(smallFolder())
  const file = join(tmp('blocked'), 'not-a-folder')
  writeFileSync(file, 'x')
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', seed: 5 })
  const trainer = new Trainer(model, { ...small, tensorboard: join(file, 'logs') })
  const error = await t.throwsAsync(trainer.fit(folder, { maxSteps: 1 }), { instanceOf: OutputError })
  t.is(error?.code, 'ERR_OUTPUT')
  t.true(error!.message.includes(join(file, 'logs')))
  t.is(trainer.step, 0)
  t.throws(() => new Trainer(model, { tensorboard: '' }), { message: /tensorboard must be a directory path/ })
})

test('facenet train --tensorboard DIR logs the run there, and --resume goes on logging to it', async (t) => {
  const data = smallFolder()
  const out = join(tmp('cli'), 'run')
  const board = join(tmp('cli-logs'), 'tb')
  const args = ['--data', data, '--arch', 'tiny', '--batch-identities', '2', '--batch-images', '3', '--negatives', '0', '--device', 'cpu', '--threads', '1', '--out', out]
  const first = await startCli(['train', ...args, '--tensorboard', board, '--max-steps', '2', '--epochs', '3']).done
  t.is(first.code, 0, first.stderr)
  // The saved recipe carries the directory: the resumed run is given no --tensorboard.
  const resumed = await startCli(['train', '--out', out, '--resume', '--max-steps', '3', '--device', 'cpu', '--threads', '1']).done
  t.is(resumed.code, 0, resumed.stderr)
  const read = readBack(board)
  t.deepEqual(read.scalars['loss/total']!.map(([step]) => step), [1, 2, 3])
  t.is(read.histograms['embeddings/norm']!.length, 3)
  t.deepEqual(read.text_plugin, ['config'])
})
