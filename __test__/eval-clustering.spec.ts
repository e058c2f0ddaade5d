import test from 'ava'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { evaluateClustering, evaluateIdentification, splitGalleryProbe } from '../src/index'
import { averageLinkage, clusterScores } from '../src/eval/clustering'
import { rng } from './helpers'

const python = readFileSync(join(__dirname, '..', '.libtorch', 'python'), 'utf8').trim()
function reference(request: object): Record<string, unknown> {
  const out = execFileSync(python, [join(__dirname, 'fixtures', 'eval_reference.py')], { input: JSON.stringify(request) })
  return JSON.parse(out.toString()) as Record<string, unknown>
}

/** `ids` identities with `per` unit vectors each, scattered by `noise` around a random centre. */
function blobs(ids: number, per: number, dim: number, noise: number, seed: number): { embeddings: Float32Array; labels: number[] } {
  const rand = rng(seed)
  const g = (): number => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
  const embeddings = new Float32Array(ids * per * dim)
  const labels: number[] = []
  for (let c = 0; c < ids; c++) {
    const centre = Array.from({ length: dim }, g)
    for (let k = 0; k < per; k++) {
      const row = (c * per + k) * dim
      let norm = 0
      for (let i = 0; i < dim; i++) {
        embeddings[row + i] = centre[i]! + noise * g()
        norm += embeddings[row + i]! ** 2
      }
      for (let i = 0; i < dim; i++) embeddings[row + i]! /= Math.sqrt(norm)
      labels.push(c)
    }
  }
  return { embeddings, labels }
}

/** Renumbers cluster ids by first appearance so that equal partitions compare equal. */
function canonical(labels: ArrayLike<number>): number[] {
  const ids = new Map<number, number>()
  return Array.from(labels, (l) => {
    if (!ids.has(l)) ids.set(l, ids.size)
    return ids.get(l)!
  })
}

test('gallery/probe split is by identity, seeded and complete', (t) => {
  const labels = ['a', 'a', 'a', 'b', 'b', 'c']
  const s1 = splitGalleryProbe(labels, 1, 3)
  t.deepEqual(splitGalleryProbe(labels, 1, 3), s1)
  t.is(s1.gallery.length, 3)
  t.deepEqual([...s1.gallery, ...s1.probes].sort(), [0, 1, 2, 3, 4, 5])
  t.deepEqual(new Set(s1.gallery.map((i) => labels[i])), new Set(['a', 'b', 'c']))
  const seeds = new Set([0, 1, 2, 3, 4, 5, 6, 7].map((seed) => splitGalleryProbe(labels, 1, seed).gallery.join()))
  t.true(seeds.size > 1, 'different seeds pick different gallery images')
})

test('identification: separable identities give top-1 = 1; random ones are near chance; usearch agrees with exact', (t) => {
  const clean = blobs(40, 5, 32, 0.2, 1)
  const exact = evaluateIdentification({ embeddings: clean.embeddings, dim: 32 }, clean.labels)
  t.is(exact.galleryCount, 40)
  t.is(exact.probeCount, 160)
  t.is(exact.topK['1'], 1)
  t.is(exact.topK['5'], 1)
  const approx = evaluateIdentification({ embeddings: clean.embeddings, dim: 32 }, clean.labels, { index: 'usearch' })
  t.is(approx.index, 'usearch')
  t.is(approx.topK['1'], 1)
  for (let run = 0; run < 20; run++) {
    const again = evaluateIdentification({ embeddings: clean.embeddings, dim: 32 }, clean.labels, { index: 'usearch' })
    t.deepEqual(again.topK, approx.topK, `usearch run ${run} repeats the first`)
  }

  const noisy = blobs(40, 5, 32, 50, 2)
  const chance = evaluateIdentification({ embeddings: noisy.embeddings, dim: 32 }, noisy.labels, { metric: 'cosine', topK: [1, 5, 40] })
  t.true(chance.topK['1']! < 0.15, `top-1 ${chance.topK['1']}`)
  t.true(chance.topK['5']! >= chance.topK['1']!)
  t.is(chance.topK['40'], 1, 'every probe finds its identity among all 40')
  const approxNoisy = evaluateIdentification({ embeddings: noisy.embeddings, dim: 32 }, noisy.labels, { metric: 'cosine', index: 'usearch' })
  t.true(Math.abs(approxNoisy.topK['5']! - chance.topK['5']!) < 0.1)
})

test('average linkage gives the same partition as scipy linkage(average) + fcluster', (t) => {
  const { embeddings, labels } = blobs(8, 6, 8, 0.6, 3)
  for (const threshold of [0.3, 0.8, 1.5]) {
    const ours = averageLinkage(embeddings, 8, threshold, 'l2')
    const ref = reference({ linkagePoints: Array.from(embeddings), dim: 8, linkageThreshold: threshold }) as { linkage: number[] }
    t.deepEqual(canonical(ours), canonical(ref.linkage), `threshold ${threshold}`)
  }
  t.is(labels.length, 48)
})

test('cluster scores: perfect, merged-all and NMI equal to scikit-learn', (t) => {
  const truth = [0, 0, 1, 1, 2, 2]
  t.deepEqual(clusterScores([5, 5, 3, 3, 9, 9], truth), { purity: 1, nmi: 1, pairwisePrecision: 1, pairwiseRecall: 1, pairwiseF: 1 })
  const merged = clusterScores([0, 0, 0, 0, 0, 0], truth)
  t.true(Math.abs(merged.purity - 1 / 3) < 1e-12)
  t.is(merged.nmi, 0)
  t.is(merged.pairwiseRecall, 1)
  t.true(Math.abs(merged.pairwisePrecision - 3 / 15) < 1e-12)
  const rand = rng(9)
  const pred = Array.from({ length: 300 }, () => Math.floor(rand() * 7))
  const labels = Array.from({ length: 300 }, (_, i) => (pred[i]! + (rand() < 0.4 ? Math.floor(rand() * 5) : 0)) % 9)
  const ref = reference({ labelsTrue: labels, labelsPred: pred }) as { nmi: number }
  t.true(Math.abs(clusterScores(pred, labels).nmi - ref.nmi) < 1e-12, `${clusterScores(pred, labels).nmi} vs ${ref.nmi}`)
})

test('evaluateClustering: both methods recover well-separated identities', (t) => {
  const { embeddings, labels } = blobs(10, 8, 16, 0.15, 4)
  for (const method of ['connected-components', 'average-linkage'] as const) {
    const r = evaluateClustering({ embeddings, dim: 16 }, labels, { threshold: 0.5, method })
    t.is(r.clusterCount, 10, method)
    t.is(r.pairwiseF, 1)
    t.true(Math.abs(r.nmi - 1) < 1e-12)
  }
  t.throws(() => evaluateClustering({ embeddings, dim: 16 }, labels.slice(1), { threshold: 1 }), { code: 'ERR_SHAPE' })
})
