/**
 * Concurrency: embed() calls racing a fit() on the same model and on other models are
 * serialized on each model's thread, never crash, and give exactly the embeddings of a
 * sequential run: each call sees the weights between two whole training steps, in call
 * order. dispose() while busy rejects what is queued with DisposedError.
 */
import test from 'ava'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DisposedError, FaceNet, Trainer, type ImageSource } from '../src'

let tmp: string
test.before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'facenet-concurrency-'))
})
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true })
})

const source: ImageSource = {
  identities: ['a', 'b', 'c', 'd'],
  labels: Int32Array.from({ length: 12 }, (_, i) => i % 4),
  length: 12,
  input: (i) => ({ kind: 'raw', name: `image${i}`, data: Buffer.from(new Uint8Array(64 * 64 * 3).map((_, p) => (p * (i + 3) + i * 17) % 256)), height: 64, width: 64 }),
}
const options = { identitiesPerBatch: 3, imagesPerIdentity: 3, negativesPerBatch: 0, augment: false as const, lr: 0.05, seed: 4 }
const create = (seed: number) => FaceNet.create({ arch: 'tiny', embeddingDim: 16, device: 'cpu', threads: 1, seed })
const probe = (k: number) => new Uint8Array(2 * 64 * 64 * 3).map((_, i) => (i * (k + 7)) % 253)
const key = (e: Float32Array) => Buffer.from(e.buffer, e.byteOffset, e.byteLength).toString('base64')
const STEPS = 6

test('embed() racing fit() on the same model: every result is the embedding of the weights between two whole steps, in call order', async (t) => {
  const model = await create(1)
  const dir = join(tmp, 'same')
  const images = probe(0)
  const states = [key(await model.embed(images))]
  // The reference: the model after each step, from the checkpoint written after it.
  const trainer = new Trainer(model, { ...options, checkpointDir: dir, checkpointEvery: 1, keepCheckpoints: 1000 })
  const calls: Promise<Float32Array>[] = []
  let racing = true
  const fit = trainer.fit(source, { epochs: 1000, maxSteps: STEPS })
  // A burst issued in one tick lands consecutively in the queue: all see the same weights.
  const burst = Array.from({ length: 16 }, () => model.embed(images))
  // Three lanes, each issuing its next call when the last one returns: calls stay in
  // flight throughout the fit without flooding the queue ahead of the steps.
  const fire = (): void => {
    if (!racing) return
    const call = model.embed(images)
    calls.push(call)
    call.then(fire, () => {})
  }
  fire()
  fire()
  fire()
  const result = await fit
  racing = false
  t.is(result.steps, STEPS)
  const after = await model.embed(images)
  for (let step = 1; step <= STEPS; step++) {
    const saved = await FaceNet.load(join(dir, `step-${String(step).padStart(8, '0')}.ckpt`), { device: 'cpu', threads: 1 })
    states.push(key(await saved.embed(images)))
    saved.dispose()
  }
  t.is(new Set(states).size, STEPS + 1, 'every step changed the weights')
  const burstKeys = (await Promise.all(burst)).map(key)
  t.is(new Set(burstKeys).size, 1, 'a burst of calls saw different weights')
  const seen = (await Promise.all(calls)).map((e) => states.indexOf(key(e)))
  t.false(seen.includes(-1), 'an embed saw weights that no sequential run has (a half-done step)')
  t.true(
    seen.every((s, i) => i === 0 || s >= seen[i - 1]!),
    `calls saw states out of order: ${seen.join(',')}`,
  )
  t.is(key(after), states[STEPS]!, 'after fit, embed gives the final weights')
  t.log(`${calls.length + burst.length} embed calls raced ${STEPS} steps; states seen: ${[...new Set(seen)].join(', ')}`)
  model.dispose()
})

test('embed() on other models while one trains: results identical to a sequential run', async (t) => {
  const trainee = await create(2)
  const others = await Promise.all([create(3), create(4), create(5)])
  const inputs = [probe(1), probe(2), probe(3)]
  // Sequential reference, nothing else running.
  const reference = []
  for (const model of others) for (const images of inputs) reference.push(key(await model.embed(images)))
  const fit = new Trainer(trainee, options).fit(source, { epochs: 1000, maxSteps: STEPS })
  const rounds = await Promise.all(
    Array.from({ length: 8 }, async () => {
      const out = await Promise.all(others.flatMap((model) => inputs.map((images) => model.embed(images))))
      return out.map(key)
    }),
  )
  t.is((await fit).steps, STEPS)
  for (const round of rounds) t.deepEqual(round, reference)
  // And the trained model itself embeds as it did before training only if no step ran: here
  // steps ran, so its embeddings moved.
  t.notDeepEqual(key(await trainee.embed(inputs[0]!)), key(await (await create(2)).embed(inputs[0]!)))
  for (const model of [trainee, ...others]) model.dispose()
})

test('an eval-mode model gives identical embeddings before and after a burst of concurrent calls (no step between)', async (t) => {
  const model = await create(6)
  const images = probe(4)
  const before = key(await model.embed(images))
  const many = await Promise.all(Array.from({ length: 64 }, (_, i) => model.embed(i % 2 === 0 ? images : probe(5))))
  t.true(many.filter((_, i) => i % 2 === 0).every((e) => key(e) === before))
  t.is(key(await model.embed(images)), before)
  model.dispose()
})

test('dispose() while a fit and many embeds are in flight: queued calls reject with DisposedError, nothing else fails', async (t) => {
  const model = await create(7)
  const bystander = await create(8)
  const expected = key(await bystander.embed(probe(6)))
  const images = probe(6)
  const embeds: Promise<Float32Array>[] = []
  let disposedAt = -1
  const fit = new Trainer(model, options).fit(source, {
    epochs: 1000,
    maxSteps: 1000,
    onStep: (s) => {
      for (let i = 0; i < 10; i++) embeds.push(model.embed(images))
      if (s.step === 3) {
        model.dispose()
        disposedAt = embeds.length
      }
    },
  })
  const fitError = await t.throwsAsync(fit, { instanceOf: DisposedError })
  t.is(fitError?.code, 'ERR_DISPOSED')
  const settled = await Promise.allSettled(embeds)
  const rejected = settled.filter((r) => r.status === 'rejected')
  t.true(rejected.every((r) => r.reason instanceof DisposedError), String(rejected.find((r) => !(r.reason instanceof DisposedError))?.reason))
  t.true(settled.slice(0, disposedAt - 10).every((r) => r.status === 'fulfilled'), 'calls queued before the last step were lost')
  // Of the 10 calls queued just before dispose(), at most the first can already be running
  // (and completes); every later one rejects.
  const last = settled.slice(disposedAt - 10).map((r) => r.status)
  const firstRejected = last.indexOf('rejected')
  t.true(firstRejected === 0 || firstRejected === 1, last.join(','))
  t.true(last.slice(firstRejected).every((status) => status === 'rejected'), last.join(','))
  await t.throwsAsync(model.embed(images), { instanceOf: DisposedError })
  // Another model is unaffected.
  t.is(key(await bystander.embed(probe(6))), expected)
  bystander.dispose()
})
