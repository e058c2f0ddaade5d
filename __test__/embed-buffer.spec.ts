/**
 * `embed` reads the caller's pixel buffer in place on the model's thread (no copy on the
 * JS thread): the embeddings are the same as PyTorch's for the same pixels, wherever the
 * view starts in its ArrayBuffer; the buffer is left unchanged, kept alive while the call
 * runs, read afresh by every call, and let go once the call has settled.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { FaceNet } from '../src'
import { pixels } from './helpers'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const dir = mkdtempSync(join(tmpdir(), 'facenet-embed-buffer-'))
const DIM = 16
const PER = 64 * 64 * 3

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

let shared: Promise<FaceNet> | undefined
const model = () => (shared ??= FaceNet.create({ arch: 'tiny', embeddingDim: DIM, device: 'cpu', threads: 1, seed: 5 }))

test.after.always(async () => {
  if (shared) (await shared).dispose()
  rmSync(dir, { recursive: true, force: true })
})

/** `source` copied into a view that starts `offset` elements into a larger buffer. */
function offsetCopy<A extends Uint8Array | Float32Array>(source: A, offset: number, make: (buffer: ArrayBuffer, at: number, length: number) => A): A {
  const buffer = new ArrayBuffer((offset + source.length + 5) * source.BYTES_PER_ELEMENT)
  const view = make(buffer, offset * source.BYTES_PER_ELEMENT, source.length)
  view.set(source)
  return view
}

test('uint8 and float32 pixels read in place, at any byteOffset, embed as PyTorch does and as a fresh copy does', async (t) => {
  const m = await model()
  const bytes = pixels(3 * PER, 41)
  const file = join(dir, 'tiny.safetensors')
  await m.save(file)
  writeFileSync(`${file}.pixels`, bytes)
  const out = execFileSync(python, [join(__dirname, 'fixtures', 'check_safetensors.py'), file, `${file}.pixels`, '3'], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const theirs = (JSON.parse(out) as { embeddings: number[] }).embeddings

  const fresh = await m.embed({ data: bytes.slice(), shape: [3, 64, 64, 3] })
  const cases = {
    'uint8 at byteOffset 3': offsetCopy(bytes, 3, (b, at, n) => new Uint8Array(b, at, n)),
    'float32 at byteOffset 8': offsetCopy(Float32Array.from(bytes), 2, (b, at, n) => new Float32Array(b, at, n)),
  }
  for (const [name, data] of Object.entries(cases)) {
    const ours = await m.embed({ data, shape: [3, 64, 64, 3] })
    t.deepEqual(Array.from(ours), Array.from(fresh), `${name}: not the embeddings of a fresh copy`)
    const worst = theirs.reduce((max, value, i) => Math.max(max, Math.abs(value - ours[i]!)), 0)
    t.true(worst < 1e-4, `${name}: largest difference from PyTorch ${worst}`)
  }
})

test('the buffer is left unchanged, and each call reads it afresh: changing it after a call settles changes the next result', async (t) => {
  const m = await model()
  const data = pixels(2 * PER, 42)
  const original = data.slice()
  const first = await m.embed({ data, shape: [2, 64, 64, 3] })
  t.deepEqual(data, original, 'embed wrote into the pixels')
  const firstCopy = first.slice()

  for (let i = 0; i < PER; i++) data[i] = 255 - data[i]!
  const second = await m.embed({ data, shape: [2, 64, 64, 3] })
  t.deepEqual(first, firstCopy, 'a settled result changed with its input')
  t.not(second.buffer, first.buffer)
  t.notDeepEqual(Array.from(second.subarray(0, DIM)), Array.from(first.subarray(0, DIM)), 'the changed image embeds as before')
  t.deepEqual(Array.from(second.subarray(DIM)), Array.from(first.subarray(DIM)), 'the untouched image embeds differently')
  t.deepEqual(Array.from(second), Array.from(await m.embed({ data: data.slice(), shape: [2, 64, 64, 3] })))
})

test('a buffer only the call references stays alive until it settles, and is collectable afterwards', async (t) => {
  const m = await model()
  const expected = await m.embed(pixels(2 * PER, 43))
  let collected = false
  const registry = new FinalizationRegistry(() => (collected = true))
  const pending = (() => {
    const data = Float32Array.from(pixels(2 * PER, 43))
    registry.register(data, 'pixels')
    return m.embed(data)
  })()
  // Were the pixels freed now, memory handed out next would overwrite them mid-call.
  gc()
  for (let i = 0; i < 8; i++) new Float32Array(2 * PER).fill(7)
  t.deepEqual(Array.from(await pending), Array.from(expected))
  // The reference is released on the JS thread a turn after the worker drops it, and
  // finalizers run as tasks: a few rounds of turn + collection are enough.
  for (let round = 0; round < 20 && !collected; round++) {
    await new Promise((resolve) => setImmediate(resolve))
    gc()
  }
  t.true(collected, 'the pixels are still referenced after the call settled')
})
