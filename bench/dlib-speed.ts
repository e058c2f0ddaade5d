/**
 * The pretrained `dlib-resnet-v1` against dlib-bin's own `compute_face_descriptor` on the
 * same 150×150 chips, in one run on this machine: images/s and the ratio.
 *
 *   npx tsx bench/dlib-speed.ts [--threads N] [--count 128] [--repeats 3]
 *
 * The chips are the parity fixtures (__test__/fixtures/dlib, dlib's own chips of LFW faces
 * plus random ones) repeated to COUNT. Ours: `model.embed` of all COUNT chips in one call
 * (32 per forward pass) and of one chip per call; dlib: a list of COUNT chips (16 per
 * forward pass, its batch size) and one chip per call. dlib-bin is built without BLAS and
 * runs its convolutions on one thread whatever N is; ours runs N libtorch threads.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { FaceNet } from '../src/index'

const args = process.argv.slice(2)
const flag = (name: string, fallback: number): number => {
  const at = args.indexOf(name)
  return at >= 0 ? Number(args[at + 1]) : fallback
}
const threads = flag('--threads', availableParallelism())
const count = flag('--count', 128)
const repeats = flag('--repeats', 3)
const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

async function best(fn: () => Promise<unknown>): Promise<number> {
  let min = Infinity
  for (let r = 0; r < repeats; r++) {
    const start = process.hrtime.bigint()
    await fn()
    min = Math.min(min, Number(process.hrtime.bigint() - start) / 1e9)
  }
  return min
}

async function main(): Promise<void> {
  const fixture = new Uint8Array(readFileSync(join(root, '__test__', 'fixtures', 'dlib', 'chips.u8')))
  const per = 150 * 150 * 3
  const chips = new Uint8Array(count * per)
  for (let i = 0; i < count; i++) chips.set(fixture.subarray((i % (fixture.length / per)) * per, ((i % (fixture.length / per)) + 1) * per), i * per)
  const file = join(tmpdir(), `facenet-dlib-speed-${process.pid}.u8`)
  writeFileSync(file, chips)
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads, device: 'cpu' })
  await model.embed({ data: chips.subarray(0, 2 * per), shape: [2, 150, 150, 3] })
  const batched = count / (await best(() => model.embed({ data: chips, shape: [count, 150, 150, 3] })))
  const single =
    16 /
    (await best(async () => {
      for (let i = 0; i < 16; i++) await model.embed({ data: chips.subarray(i * per, (i + 1) * per), shape: [1, 150, 150, 3] })
    }))
  const dlib = JSON.parse(execFileSync(python, [join(__dirname, 'dlib_speed.py'), file, String(count), String(repeats)], { encoding: 'utf8' })) as { batched: number; single: number; dlib: string; blas: boolean }
  const rows = [
    { path: `batch of ${count}`, 'facenet-torch img/s': batched.toFixed(1), 'dlib img/s': dlib.batched.toFixed(1), ratio: (batched / dlib.batched).toFixed(2) },
    { path: 'one chip per call', 'facenet-torch img/s': single.toFixed(1), 'dlib img/s': dlib.single.toFixed(1), ratio: (single / dlib.single).toFixed(2) },
  ]
  console.log(`${cpus()[0]?.model ?? 'cpu'}; facenet-torch ${threads} thread(s); dlib ${dlib.dlib} (dlib-bin, BLAS ${dlib.blas ? 'on' : 'off'})`)
  console.table(rows)
}

void main()
