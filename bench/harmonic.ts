/**
 * Harmonic embeddings (FaceNet §7) on LFW: v1 = `tiny` trained on folds 1–9's identities,
 * v2 = a narrower/deeper `tiny` trained on the same data, once on its own and once
 * harmonically with v1. Fold 10's 600 pairs are scored with both images embedded by v1,
 * both by v2, and one by each (a by v1, b by v2); accuracy is 10-fold cross-validated
 * inside fold 10 (threshold from the other 9 sub-folds of 30 same and 30 different pairs).
 *
 * The three ROC curves of the harmonic run (v1↔v1, v2↔v2, v1↔v2: the paper's Figure 9), with
 * v1↔v2 of the v2 trained alone for contrast, are drawn into runs/harmonic-STEPS-SEED/roc.png
 * (an evaluation report, index.html beside it).
 *
 *   nice node --import tsx bench/harmonic.ts [steps] [seed] [v2 widths, e.g. 24,48,96,192,256]
 */
import { join, resolve } from 'node:path'
import { evaluateVerification, FaceNet, ImageFolder, LfwPairs, loadPairImages, Trainer, writeReport, type TrainerOptions, type VerificationResult } from '../src'

const root = resolve(__dirname, '..', 'data', 'lfw')
const steps = Number(process.argv[2] ?? 300)
const seed = Number(process.argv[3] ?? 1)
const v2Widths = (process.argv[4] ?? '24,48,96,192,256').split(',').map(Number)

async function main(): Promise<void> {
  const lfw = await LfwPairs.parse(join(root, 'pairs.txt'))
  const { trainIdentities } = lfw.unrestrictedSplit(9)
  const folder = (await ImageFolder.open(root)).subset(trainIdentities)
  const recipe: TrainerOptions = { optimizer: 'adamw', lr: 0.001, weightDecay: 0.05, miner: 'batch-all', reducer: 'mean-active', identitiesPerBatch: 16, imagesPerIdentity: 4, negativesPerBatch: 8, centerCrop: 0.7, seed }
  const make = (widths: number[], s: number) => FaceNet.create({ arch: 'tiny', embeddingDim: 64, device: 'cpu', seed: s, threads: 2, tiny: { widths } })
  const fit = async (model: FaceNet, options: TrainerOptions) => {
    const started = Date.now()
    await new Trainer(model, options).fit(folder, { epochs: 1000, maxSteps: steps, onStep: (s) => s.step % 20 === 0 && console.error(`step ${s.step} loss ${s.loss.toFixed(4)}`) })
    return (Date.now() - started) / 1000
  }
  const v1 = await make([32, 64, 128, 256], seed)
  const t1 = await fit(v1, recipe)
  const alone = await make(v2Widths, seed + 100)
  const t2 = await fit(alone, recipe)
  const harmonic = await make(v2Widths, seed + 100)
  const t3 = await fit(harmonic, { ...recipe, harmonic: { with: v1 } })

  const test = await loadPairImages(lfw, v1.inputSize, { folds: [9], centerCrop: 0.7 })
  // pairs.txt lists a fold's 300 same pairs, then its 300 different ones: interleaved, so that
  // each contiguous sub-fold of the cross-validation holds 30 of each.
  const listed = test.pairs[0]!
  const sames = listed.filter((p) => p.same)
  const differents = listed.filter((p) => !p.same)
  const pairs = sames.flatMap((p, i) => [p, differents[i]!])
  const embed = (m: FaceNet) => m.embed(test.images)
  const [e1, eAlone, eHarm] = await Promise.all([embed(v1), embed(alone), embed(harmonic)])
  const dim = 64
  const verify = (ea: Float32Array, eb: Float32Array): VerificationResult => {
    const distances = pairs.map(({ a, b }) => {
      let d = 0
      for (let k = 0; k < dim; k++) d += (ea[a * dim + k]! - eb[b * dim + k]!) ** 2
      return d
    })
    return evaluateVerification({ distances, same: pairs.map((p) => p.same) })
  }
  const results = {
    v11: verify(e1, e1),
    alone22: verify(eAlone, eAlone),
    harm22: verify(eHarm, eHarm),
    alone12: verify(e1, eAlone),
    harm12: verify(e1, eHarm),
  }
  const score = (r: VerificationResult) => `${(100 * r.accuracy.mean).toFixed(2)} ± ${(100 * r.accuracy.std).toFixed(2)}`
  const rows = [
    ['v1↔v1', score(results.v11), score(results.v11)],
    ['v2↔v2', score(results.alone22), score(results.harm22)],
    ['v1↔v2', score(results.alone12), score(results.harm12)],
  ]
  const report = await writeReport(resolve(__dirname, '..', 'runs', `harmonic-${steps}-${seed}`), {
    title: `Harmonic embeddings on LFW fold 10 (FaceNet §7, Figure 9): ${steps} steps, seed ${seed}`,
    name: 'v1↔v2, v2 trained harmonically',
    verification: results.harm12,
    baselines: [
      { name: 'v1↔v1', verification: results.v11 },
      { name: 'v2↔v2, v2 trained harmonically', verification: results.harm22 },
      { name: 'v1↔v2, v2 trained alone', verification: results.alone12 },
    ],
    details: { steps, seed, v1: 'tiny 32,64,128,256', v2: `tiny ${v2Widths.join(',')}` },
  })
  const [s1, sAlone, sHarm] = await Promise.all([v1.embeddingSpace(), alone.embeddingSpace(), harmonic.embeddingSpace()])
  console.log(`embedding spaces: v1 ${s1}, v2 alone ${sAlone}, v2 harmonic ${sHarm} (${sHarm === s1 ? 'declared compatible with v1' : 'NOT declared compatible'})`)
  console.log(`ROC (Figure 9): ${report.roc}`)
  console.log(`steps ${steps}, seed ${seed}; training seconds v1 ${t1.toFixed(0)}, v2 alone ${t2.toFixed(0)}, v2 harmonic ${t3.toFixed(0)}`)
  console.log('| pairs | v2 trained alone | v2 trained harmonically |')
  console.log('|---|---|---|')
  for (const row of rows) console.log(`| ${row.join(' | ')} |`)
}

main().catch((error: unknown) => {
  console.error(error)
  process.exit(1)
})
