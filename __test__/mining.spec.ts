import test from 'ava'
import { InvalidArgumentError, mineTriplets, ShapeError, tripletLoss } from '../src/index'

// Six 2-D points, two identities: 0,1,2 on the x axis near the origin, 3,4,5 on y.
const points = [
  [1, 0],
  [0.95, 0.312],
  [0.95, -0.312],
  [0, 1],
  [0.312, 0.95],
  [-0.312, 0.95],
]
const embeddings = Float32Array.from(points.flat())
const labels = Int32Array.from([0, 0, 0, 1, 1, 1])

function sq(a: number, b: number): number {
  const [x, y] = [points[a]!, points[b]!]
  return (x[0]! - y[0]!) ** 2 + (x[1]! - y[1]!) ** 2
}

test('batch-all returns every valid triplet with a positive loss, with stats', async (t) => {
  const margin = 2
  const mined = await mineTriplets(embeddings, labels, { miner: 'batch-all', margin })
  const expected: string[] = []
  for (let a = 0; a < 6; a++)
    for (let p = 0; p < 6; p++)
      for (let n = 0; n < 6; n++)
        if (a !== p && labels[a] === labels[p] && labels[n] !== labels[a] && sq(a, p) - sq(a, n) + margin > 0)
          expected.push(`${a},${p},${n}`)
  const got = Array.from(mined.anchors, (a, i) => `${a},${mined.positives[i]},${mined.negatives[i]}`)
  t.deepEqual(got.sort(), expected.sort())
  t.is(mined.stats.anchorPositivePairs, 12)
  t.is(mined.stats.triplets, expected.length)
  t.is(mined.stats.activeFraction, 1)
})

test('semi-hard finds a negative for every pair and is deterministic per seed', async (t) => {
  const a = await mineTriplets(embeddings, labels, { seed: 3 })
  const b = await mineTriplets(embeddings, Array.from(labels), { seed: 3 })
  t.is(a.stats.anchorPositivePairs, 12)
  t.is(a.anchors.length, 12)
  t.deepEqual([...a.negatives], [...b.negatives])
  for (let i = 0; i < a.anchors.length; i++) t.not(labels[a.negatives[i]!], labels[a.anchors[i]!])
  // All negatives are far (d ≥ 1.1) and positives close (d ≤ 0.39): no semi-hard at α=0.2.
  t.is(a.stats.noSemiHardFraction, 1)
  const epoch = await mineTriplets(embeddings, labels, { mining: 'epoch', chunk: 2, choice: 'hardest' })
  t.is(epoch.anchors.length, 12)
})

test("epoch mining is the mode 'epoch' of the semi-hard miner; another miner is refused by mineTriplets and by the Trainer alike", async (t) => {
  const mode = await mineTriplets(embeddings, labels, { miner: 'semi-hard', mining: 'epoch', chunk: 2, seed: 5 })
  const implied = await mineTriplets(embeddings, labels, { mining: 'epoch', chunk: 2, seed: 5 })
  t.is(mode.anchors.length, 12)
  t.deepEqual([mode.anchors, mode.positives, mode.negatives].map((a) => [...a]), [implied.anchors, implied.positives, implied.negatives].map((a) => [...a]))
  // The per-epoch list is semi-hard mining: another miner is refused, not silently changed.
  await t.throwsAsync(mineTriplets(embeddings, labels, { miner: 'batch-hard', mining: 'epoch' }), { instanceOf: InvalidArgumentError, message: /only the semi-hard miner/ })
  // The removed spelling { miner: 'epoch' } is an unknown miner now.
  await t.throwsAsync(mineTriplets(embeddings, labels, { miner: 'epoch' as never }), { instanceOf: InvalidArgumentError, message: /unknown miner 'epoch'/ })
  const { FaceNet, Trainer } = await import('../src/index')
  using model = await FaceNet.create({ arch: 'tiny', device: 'cpu', threads: 1 })
  t.throws(() => new Trainer(model, { mining: 'epoch', miner: 'batch-hard' }), { instanceOf: InvalidArgumentError, message: /mining 'epoch' supports only the semi-hard miner, got miner 'batch-hard'/ })
  t.is(new Trainer(model, { mining: 'epoch', miner: 'semi-hard' }).options.miner, 'semi-hard')
})

test('tripletLoss matches a hand computation and returns a gradient', async (t) => {
  // Triplet (0, 1, 3): d(a,p) = 0.05² + 0.312² = 0.099844, d(a,n) = 2; with margin 2.5
  // the hinge is 0.099844 − 2 + 2.5 = 0.599844.
  const triplets = { anchors: Int32Array.of(0), positives: Int32Array.of(1), negatives: Int32Array.of(3) }
  const out = await tripletLoss(embeddings, 2, triplets, { margin: 2.5, normalize: false })
  t.true(Math.abs(out.loss - (sq(0, 1) - sq(0, 3) + 2.5)) < 1e-5)
  t.is(out.activeTriplets, 1)
  t.is(out.gradient.length, embeddings.length)
  // d/d p of ‖a − p‖² is 2(p − a).
  t.true(Math.abs(out.gradient[2]! - 2 * (0.95 - 1)) < 1e-5)
  const none = await tripletLoss(embeddings, 2, triplets, { margin: 0 })
  t.is(none.loss, 0)
})

test('arguments are validated with coded errors', async (t) => {
  await t.throwsAsync(mineTriplets(embeddings, labels, { miner: 'nope' as never }), {
    instanceOf: InvalidArgumentError,
    message: /miner/,
  })
  const err = await t.throwsAsync(mineTriplets(embeddings, labels, { margin: -1 }), { instanceOf: InvalidArgumentError })
  t.is(err?.code, 'ERR_INVALID_ARGUMENT')
  await t.throwsAsync(mineTriplets(embeddings.subarray(1), labels), { instanceOf: ShapeError })
  await t.throwsAsync(mineTriplets(embeddings, [0, 0.5, 1, 1, 2, 2]), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(mineTriplets(embeddings, labels, { seed: -1 }), { instanceOf: InvalidArgumentError })
  const bad = { anchors: Int32Array.of(0), positives: Int32Array.of(1), negatives: Int32Array.of(9) }
  const lossErr = await t.throwsAsync(tripletLoss(embeddings, 2, bad), { instanceOf: InvalidArgumentError })
  t.regex(lossErr?.message ?? '', /index the 6 embeddings/)
  await t.throwsAsync(tripletLoss(embeddings, 4, { ...bad, negatives: Int32Array.of() }), { instanceOf: ShapeError })
})
