/**
 * The LFW proof of the training engine (issue 10): train on the identities of View 2
 * folds 1–9 of the shipped LFW, then report verification accuracy on fold 10's 600 pairs
 * with the threshold chosen on folds 1–9's pairs.
 *
 *   npx tsx bench/lfw-train.ts [--minutes 30] [--arch tiny] [--out runs/lfw]
 *     [--optimizer adagrad] [--lr 0.05] [--miner semi-hard] [--reducer mean]
 *     [--P 16] [--K 4] [--negatives 0] [--crop 0.7] [--seed 0]
 *     [--device auto] [--precision fp32] [--prefetch 2]
 *     [--schedule constant|cosine] [--total-steps N] [--min-lr 0] [--weight-decay 0]
 *     [--crop-scale 0.875] [--rotation 0] [--brightness 0] [--curve-minutes 5]
 *     [--max-steps N] [--data DIR] [--packed DIR] [--curve-steps N]
 *     [--loss triplet|arcface|cosface|softmax-center] [--class-margin M] [--scale S]
 *     [--center-weight X] [--triplet-weight W] [--triplet-from STEP] [--batch-size 128]
 *     [--tiny-widths 32,64,128,256] [--input-size 64] [--threads N]
 *
 * `--loss` picks the objective (issue 18): a classification loss trains on shuffled batches
 * of `--batch-size` over every training image; `--triplet-weight W` adds W × the triplet
 * loss (P×K batches then); `--triplet-from STEP` trains with the triplet loss alone from
 * STEP on (a warm-up). `--curve-steps N` saves the weights every N steps instead of every
 * `--curve-minutes`, so that the curve of a run at fixed steps repeats on any machine.
 *
 * `--max-steps` stops after a fixed number of optimizer steps (as well as the minutes), for
 * comparisons at equal work. `--data` reads the images from another folder of the LFW
 * layout (e.g. `facenet align data/lfw runs/lfw-aligned`), with the shipped pairs.txt.
 * `--packed DIR` trains on the training identities packed once into DIR (at the model's
 * input size, with the centre crop applied; reused when DIR holds a pack) as a
 * memory-mapped `NpyDataset`, instead of decoding the JPEGs every epoch; the packing is
 * not counted in the minutes.
 * Prints one line per epoch and a final JSON summary. Every `--curve-minutes` the weights
 * are saved (milliseconds for small networks); they are evaluated after the budget, so the
 * fold-10 curve costs the training no time.
 */
import { cpSync, existsSync } from 'node:fs'
import { mkdir, mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import { join, resolve } from 'node:path'
import { evaluateVerification, FaceNet, ImageFolder, LfwPairs, loadPairImages, NpyDataset, packImageFolder, Trainer, type Arch, type Device, type LossPhaseOptions, type LossType, type Precision } from '../src'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    arch: { type: 'string', default: 'tiny' },
    lr: { type: 'string', default: '0.05' },
    optimizer: { type: 'string', default: 'adagrad' },
    P: { type: 'string', default: '16' },
    K: { type: 'string', default: '4' },
    negatives: { type: 'string', default: '0' },
    crop: { type: 'string', default: '0.7' },
    epochs: { type: 'string', default: '1000' },
    miner: { type: 'string', default: 'semi-hard' },
    reducer: { type: 'string', default: 'mean' },
    seed: { type: 'string', default: '0' },
    out: { type: 'string', default: 'runs/lfw' },
    device: { type: 'string', default: 'auto' },
    precision: { type: 'string', default: 'fp32' },
    prefetch: { type: 'string', default: '2' },
    schedule: { type: 'string', default: 'constant' },
    'total-steps': { type: 'string' },
    'min-lr': { type: 'string', default: '0' },
    'weight-decay': { type: 'string', default: '0' },
    'crop-scale': { type: 'string', default: '0.875' },
    rotation: { type: 'string', default: '0' },
    brightness: { type: 'string', default: '0' },
    'curve-minutes': { type: 'string', default: '5' },
    'max-steps': { type: 'string' },
    data: { type: 'string' },
    packed: { type: 'string' },
    'curve-steps': { type: 'string' },
    loss: { type: 'string', default: 'triplet' },
    'class-margin': { type: 'string' },
    scale: { type: 'string' },
    'center-weight': { type: 'string' },
    'triplet-weight': { type: 'string' },
    'triplet-from': { type: 'string' },
    'batch-size': { type: 'string', default: '128' },
    'tiny-widths': { type: 'string' },
    'input-size': { type: 'string' },
    threads: { type: 'string' },
  },
})

async function main() {
  const shipped = resolve(__dirname, '..', 'data', 'lfw')
  const root = values.data ? resolve(values.data) : shipped
  const out = resolve(values.out!)
  const lfw = await LfwPairs.parse(join(shipped, 'pairs.txt'), { root })
  const { trainIdentities } = lfw.unrestrictedSplit(9)
  const tiny = values['tiny-widths'] || values['input-size'] ? { ...(values['tiny-widths'] ? { widths: values['tiny-widths'].split(',').map(Number) } : {}), ...(values['input-size'] ? { inputSize: Number(values['input-size']) } : {}) } : undefined
  const model = await FaceNet.create({ arch: values.arch as Arch, seed: Number(values.seed), device: values.device as Device, ...(tiny ? { tiny } : {}), ...(values.threads ? { threads: Number(values.threads) } : {}) })
  const centerCrop = Number(values.crop)
  const folder = values.packed ? await packedTrainSet(resolve(values.packed), root, trainIdentities, model.inputSize.height, centerCrop) : (await ImageFolder.open(root)).subset(trainIdentities)
  const started = Date.now()
  const pairImages = await loadPairImages(lfw, model.inputSize, { centerCrop })
  const evaluate = async (net: FaceNet) => {
    const dim = net.embeddingDim
    const [n, h, w] = pairImages.images.shape
    const per = h * w * 3
    const embeddings = new Float32Array(n * dim)
    for (let s = 0; s < n; s += 128) {
      const c = Math.min(128, n - s)
      embeddings.set(await net.embed({ data: pairImages.images.data.subarray(s * per, (s + c) * per), shape: [c, h, w, 3] }), s * dim)
    }
    // 10 folds: fold k's accuracy uses the threshold chosen on the other nine, so fold 10's
    // (index 9) is the protocol's number.
    const result = evaluateVerification({ embeddings, dim }, pairImages.pairs)
    return { fold10: result.accuracy.perFold[9]!, mean: result.accuracy.mean, auc: result.auc }
  }
  const untrained = await evaluate(model)
  console.log(`train images ${folder.length}, identities ${folder.identities.length}; untrained fold-10 accuracy ${(100 * untrained.fold10).toFixed(2)}%`)
  const type = values.loss as LossType
  const first = {
    type,
    ...(values['class-margin'] ? { margin: Number(values['class-margin']) } : {}),
    ...(values.scale ? { scale: Number(values.scale) } : {}),
    ...(values['center-weight'] ? { centerWeight: Number(values['center-weight']) } : {}),
    ...(values['triplet-weight'] ? { tripletWeight: Number(values['triplet-weight']) } : {}),
  } as LossPhaseOptions
  const loss: LossPhaseOptions[] = values['triplet-from'] ? [first, { type: 'triplet', fromStep: Number(values['triplet-from']) }] : [first]
  const trainer = new Trainer(model, {
    loss,
    batchSize: Number(values['batch-size']),
    optimizer: values.optimizer as 'adagrad',
    lr: Number(values.lr),
    identitiesPerBatch: Number(values.P),
    imagesPerIdentity: Number(values.K),
    negativesPerBatch: Number(values.negatives),
    miner: values.miner as 'semi-hard',
    reducer: values.reducer as 'mean',
    // A pack already holds the centre crop.
    centerCrop: values.packed ? 1 : centerCrop,
    seed: Number(values.seed),
    precision: values.precision as Precision,
    prefetch: Number(values.prefetch),
    weightDecay: Number(values['weight-decay']),
    augment: { cropScale: Number(values['crop-scale']), maxRotation: Number(values.rotation), brightness: Number(values.brightness) },
    schedule:
      values.schedule === 'cosine'
        ? { type: 'cosine', minLr: Number(values['min-lr']), ...(values['total-steps'] ? { totalSteps: Number(values['total-steps']) } : {}) }
        : { type: 'constant' },
    logFile: join(out, 'train.jsonl'),
  })
  const budget = Number(values.minutes) * 60
  const snapshots: { minutes: number; step: number; file: string }[] = []
  const curveEvery = Number(values['curve-minutes']) * 60000
  await mkdir(join(out, 'curve'), { recursive: true })
  let waited = 0
  let stepped = 0
  const curveSteps = values['curve-steps'] ? Number(values['curve-steps']) : undefined
  const snapshot = async () => {
    const file = join(out, 'curve', `step-${trainer.step}.safetensors`)
    await model.save(file)
    snapshots.push({ minutes: (Date.now() - started) / 60000, step: trainer.step, file })
  }
  // The iterator pauses the run while a snapshot is written, so it holds that step's weights.
  for await (const s of trainer.steps(folder, {
    epochs: Number(values.epochs),
    maxSeconds: budget - (Date.now() - started) / 1000,
    ...(values['max-steps'] ? { maxSteps: Number(values['max-steps']) } : {}),
    onEpoch: (e) => {
      console.log(`epoch ${e.epoch} steps ${e.steps} loss ${e.meanLoss.toFixed(4)} ${e.seconds.toFixed(0)}s data-wait ${((100 * waited) / (waited + stepped)).toFixed(1)}%`)
    },
  })) {
    waited += s.dataWaitMs
    stepped += s.stepMs
    if (curveSteps !== undefined ? s.step % curveSteps === 0 : Date.now() - started >= (snapshots.length + 1) * curveEvery) await snapshot()
  }
  const minutes = (Date.now() - started) / 60000
  const final = await evaluate(model)
  await model.save(join(out, 'model.safetensors'))
  const curve: { minutes: number; step: number; fold10: number }[] = []
  for (const snapshot of snapshots) {
    const saved = await FaceNet.load(snapshot.file, { device: values.device as Device })
    curve.push({ minutes: snapshot.minutes, step: snapshot.step, fold10: (await evaluate(saved)).fold10 })
    saved.dispose()
  }
  curve.push({ minutes, step: trainer.step, fold10: final.fold10 })
  for (const point of curve) console.log(`curve: ${point.minutes.toFixed(1)} min, step ${point.step}, fold 10 ${(100 * point.fold10).toFixed(2)}%`)
  console.log(
    JSON.stringify({
      arch: values.arch,
      data: values.packed ? `${resolve(values.packed)} (packed)` : root,
      seed: Number(values.seed),
      device: model.device,
      precision: values.precision,
      loss,
      minutes,
      steps: trainer.step,
      untrainedFold10: untrained.fold10,
      fold10: final.fold10,
      tenFoldMean: final.mean,
      auc: final.auc,
      dataWaitPercent: (100 * waited) / (waited + stepped),
      curve,
    }),
  )
  model.dispose()
}

/** The training identities of `root` packed into `dir` (once) and opened memory-mapped. */
async function packedTrainSet(dir: string, root: string, identities: readonly string[], size: number, centerCrop: number): Promise<NpyDataset> {
  if (!existsSync(join(dir, 'index.json'))) {
    const source = await mkdtemp(join(tmpdir(), 'facenet-lfw-train-'))
    for (const name of identities) cpSync(join(root, name), join(source, name), { recursive: true })
    const packed = await packImageFolder(source, dir, { size, centerCrop })
    console.log(`packed ${packed.count} training images at ${size}×${size} (centre crop ${centerCrop}) into ${dir}`)
  }
  return NpyDataset.open({ images: join(dir, 'images.npy'), names: join(dir, 'names.npy') })
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
