import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  evaluateVerification,
  rawPixelEmbeddings,
  type IndexPair,
} from '../src/index'
import { rocCurve } from '../src/eval/roc'
import { interp1dSlinear, kFold } from '../src/eval/verification'
import { rng } from './helpers'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

function reference(request: object): Record<string, unknown> {
  const out = execFileSync(python, [join(__dirname, 'fixtures', 'eval_reference.py')], {
    input: JSON.stringify(request),
    maxBuffer: 64 << 20,
  })
  return JSON.parse(out.toString()) as Record<string, unknown>
}

function gaussian(rand: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
}

/**
 * LFW-shaped scores: 10 folds of 300 same then 300 different pairs, squared distances in
 * 0..4; a third of them rounded to 2 decimals so that ties occur, as on a coarse model.
 */
function lfwLikeScores(seed: number): { distances: number[]; same: boolean[] } {
  const rand = rng(seed)
  const distances: number[] = []
  const same: boolean[] = []
  for (let f = 0; f < 10; f++) {
    for (let i = 0; i < 600; i++) {
      const isSame = i < 300
      let d = Math.min(4, Math.max(0, (isSame ? 0.9 : 1.6) + 0.35 * gaussian(rand)))
      if (rand() < 1 / 3) d = Math.round(d * 100) / 100
      distances.push(d)
      same.push(isSame)
    }
  }
  return { distances, same }
}

/** JSON has no infinities; the reference writes scikit-learn's leading threshold as null. */
function finiteOrNull(values: number[]): (number | null)[] {
  return values.map((v) => (Number.isFinite(v) ? v : null))
}

interface Protocol {
  accuracy: number[]
  accuracyMean: number
  accuracyStd: number
  thresholds: number[]
  val: number[]
  valMean: number
  valStd: number
  far: number[]
}

test('ROC and AUC equal scikit-learn roc_curve / roc_auc_score; 10-fold accuracy and VAL@FAR equal the Python reference', (t) => {
  const scores = lfwLikeScores(42)
  const ref = reference({ ...scores, folds: 10, farTarget: 1e-3, modes: ['lfw', 'exact'] }) as {
    roc: { fpr: number[]; tpr: number[]; thresholds: (number | null)[] }
    fullRoc: { fpr: number[]; tpr: number[]; thresholds: (number | null)[] }
    auc: number
    lfw: Protocol
    exact: Protocol
  }
  for (const thresholds of ['lfw', 'exact'] as const) {
    const result = evaluateVerification(scores, undefined, { thresholds })
    const expected = ref[thresholds]
    t.is(result.roc.fpr.length, ref.roc.fpr.length)
    t.deepEqual(result.roc.fpr, ref.roc.fpr)
    t.deepEqual(result.roc.tpr, ref.roc.tpr)
    t.deepEqual(finiteOrNull(result.roc.thresholds), ref.roc.thresholds)
    t.true(Math.abs(result.auc - ref.auc) < 1e-9, `AUC ${result.auc} vs ${ref.auc}`)
    t.deepEqual(result.accuracy.perFold, expected.accuracy, `${thresholds}: accuracy per fold`)
    t.deepEqual(result.foldThresholds, expected.thresholds, `${thresholds}: chosen thresholds`)
    t.true(Math.abs(result.accuracy.mean - expected.accuracyMean) < 1e-12)
    t.true(Math.abs(result.accuracy.std - expected.accuracyStd) < 1e-12)
    t.deepEqual(result.val.perFold, expected.val, `${thresholds}: VAL per fold`)
    t.deepEqual(result.far.perFold, expected.far, `${thresholds}: FAR per fold`)
    t.true(Math.abs(result.val.mean - expected.valMean) < 1e-12)
    t.true(Math.abs(result.val.std - expected.valStd) < 1e-12)
    // The data are separable enough that this is a meaningful, non-degenerate check.
    t.true(result.accuracy.mean > 0.8 && result.accuracy.mean < 0.95, `accuracy ${result.accuracy.mean}`)
    t.true(result.val.mean > 0.02, `VAL ${result.val.mean}`)
  }
  const full = rocCurve(scores.distances, scores.same, false)
  t.deepEqual(full.fpr, ref.fullRoc.fpr)
  t.deepEqual(full.tpr, ref.fullRoc.tpr)
  t.deepEqual(finiteOrNull(full.thresholds), ref.fullRoc.thresholds)
})

test('interp1dSlinear matches scipy interp1d(kind="slinear") at knots, between them and at the ends', (t) => {
  const x = [0, 0.001, 0.002, 0.5, 1]
  const y = [0.1, 0.3, 0.5, 0.6, 0.7]
  const cases = [0, 0.0005, 0.001, 0.0015, 0.002, 0.3, 0.5, 0.99, 1].map((target) => ({ x, y, target }))
  const ref = reference({ interp: cases }) as { interp: number[] }
  t.deepEqual(
    cases.map((c) => interp1dSlinear(c.x, c.y, c.target)),
    ref.interp,
  )
  t.true(Number.isNaN(interp1dSlinear([0, 0, 1], [1, 2, 3], 0.5)), 'repeated x is rejected, as scipy does')
  t.true(Number.isNaN(interp1dSlinear(x, y, 1.5)), 'out of range is rejected, as scipy does')
})

test('embeddings and pairs: distances, flip averaging, cosine and given folds', (t) => {
  // Four 2-D unit vectors; rows 0/1 close, 2/3 close.
  const emb = new Float32Array([1, 0, 0.8, 0.6, 0, 1, -0.6, 0.8])
  const pairs: IndexPair[] = []
  for (let k = 0; k < 10; k++) pairs.push({ a: 0, b: 1, same: true }, { a: 2, b: 3, same: true }, { a: 0, b: 2, same: false }, { a: 1, b: 3, same: false })
  const r = evaluateVerification({ embeddings: emb, dim: 2 }, pairs, { folds: 4 })
  t.is(r.metric, 'l2')
  t.true(Math.abs(r.distances[0]! - ((1 - 0.8) ** 2 + 0.6 ** 2)) < 1e-6)
  t.is(r.accuracy.mean, 1)
  t.is(r.auc, 1)
  t.is(r.eer, 0)
  t.true(r.threshold > r.distances[0]! && r.threshold < r.distances[2]!)
  const cos = evaluateVerification({ embeddings: emb, dim: 2 }, pairs, { folds: 4, metric: 'cosine' })
  t.true(Math.abs(cos.distances[0]! - 0.2) < 1e-6)
  t.true(Math.abs(cos.distances[2]! - 1) < 1e-6)
  // Mirrors pointing elsewhere: the average of (1,0) and (0,1) renormalized is (√½, √½).
  const flipped = new Float32Array([0, 1, 0, 1, 0, 1, 0, 1])
  const fl = evaluateVerification({ embeddings: emb, dim: 2, flipped }, [pairs.slice(0, 4), pairs.slice(4, 8)])
  t.is(fl.folds, 2)
  t.is(fl.pairCount, 8)
  const a = [Math.SQRT1_2, Math.SQRT1_2]
  const n = Math.hypot(0.8, 1.6)
  const b = [0.8 / n, 1.6 / n]
  t.true(Math.abs(fl.distances[0]! - ((a[0]! - b[0]!) ** 2 + (a[1]! - b[1]!) ** 2)) < 1e-9)
  t.throws(() => evaluateVerification({ embeddings: emb, dim: 2 }, [{ a: 0, b: 9, same: true }, { a: 0, b: 1, same: false }], { folds: 2 }), {
    code: 'ERR_INVALID_ARGUMENT',
  })
  t.throws(() => evaluateVerification({ embeddings: emb, dim: 3 }, pairs), { code: 'ERR_SHAPE' })
})

test('kFold splits like scikit-learn KFold without shuffling', (t) => {
  t.deepEqual(kFold(7, 3), [[0, 1, 2], [3, 4], [5, 6]])
  t.throws(() => kFold(3, 4), { code: 'ERR_INVALID_ARGUMENT' })
})

test('rawPixelEmbeddings flattens and L2-normalizes each image', (t) => {
  const px = new Uint8Array([3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
  const { embeddings, dim } = rawPixelEmbeddings(px, [2, 2, 1, 3])
  t.is(dim, 6)
  t.deepEqual(Array.from(embeddings.subarray(0, 6)), [Math.fround(0.6), Math.fround(0.8), 0, 0, 0, 0])
  t.deepEqual(Array.from(embeddings.subarray(6)), [0, 0, 0, 0, 0, 1])
  t.throws(() => rawPixelEmbeddings(px, [5, 2]), { code: 'ERR_SHAPE' })
})

test('a 6000-pair evaluation from 128-D embeddings returns full results', (t) => {
  const rand = rng(7)
  const rows = 2000
  const dim = 128
  const emb = new Float32Array(rows * dim)
  for (let i = 0; i < emb.length; i++) emb[i] = gaussian(rand)
  const pairs: IndexPair[] = []
  for (let i = 0; i < 6000; i++) pairs.push({ a: Math.floor(rand() * rows), b: Math.floor(rand() * rows), same: i % 600 < 300 })
  const r = evaluateVerification({ embeddings: emb, dim }, pairs)
  t.is(r.pairCount, 6000)
  t.is(r.accuracy.perFold.length, 10)
  // Random embeddings carry no identity: chance level.
  t.true(Math.abs(r.auc - 0.5) < 0.05)
})
