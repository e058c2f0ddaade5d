import test from 'ava'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { evaluate, evaluateVerification, FaceNet, rawPixelEmbeddings, type IndexPair } from '../src/index'

test('evaluate embeds images with a FaceNet, averages mirrored embeddings and writes a report with a raw-pixel baseline', async (t) => {
  const model = await FaceNet.create({ seed: 1, threads: 2 })
  t.teardown(() => model.dispose())
  const { height, width } = model.inputSize
  const n = 6
  const data = new Uint8Array(n * height * width * 3)
  let s = 12345
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    data[i] = s >>> 24
  }
  const images = { data, shape: [n, height, width, 3] as const }
  const pairs: IndexPair[][] = [
    [{ a: 0, b: 1, same: true }, { a: 2, b: 3, same: false }],
    [{ a: 4, b: 5, same: true }, { a: 0, b: 5, same: false }],
  ]
  const dir = await mkdtemp(join(tmpdir(), 'facenet-eval-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const raw = evaluateVerification(rawPixelEmbeddings(data, images.shape), pairs)
  const plain = await evaluate(model, images, pairs, { batchSize: 4 })
  const flipped = await evaluate(model, images, pairs, { batchSize: 4, flip: true, report: dir, name: 'untrained nn1', baselines: [{ name: 'raw pixels', verification: raw }] })
  t.is(plain.verification.pairCount, 4)
  t.is(plain.embeddings.length, n * model.embeddingDim)
  for (let r = 0; r < n; r++) {
    const row = flipped.embeddings.subarray(r * model.embeddingDim, (r + 1) * model.embeddingDim)
    t.true(Math.abs(Math.hypot(...row) - 1) < 1e-5)
  }
  t.notDeepEqual(Array.from(flipped.verification.distances), Array.from(plain.verification.distances), 'mirrors change the embeddings')
  const json = JSON.parse(await readFile(flipped.report!.json, 'utf8')) as { results: { name: string }; baselines: { name: string }[]; details: { flip: boolean } }
  t.is(json.results.name, 'untrained nn1')
  t.is(json.baselines[0]!.name, 'raw pixels')
  t.true(json.details.flip)
  t.true((await readFile(flipped.report!.roc)).length > 1000)
})
