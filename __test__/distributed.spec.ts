/**
 * Data-parallel training across processes over c10d's Gloo, on 127.0.0.1: `facenet train
 * --nproc 2` and ranks started by hand with torchrun's variables, against one process.
 * The tiny arch, a few LFW images, one thread per rank.
 */
import test from 'ava'
import { mkdtemp, readdir, readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { distributedFromEnv, FaceNet, InvalidArgumentError, PKSampler, ShuffleSampler, Trainer } from '../src'
import { checkpointName } from '../src/training/checkpoints'
import { copyLfwPhotos, startCli, type CliRun } from './helpers'

const IDENTITIES = ['Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair', 'Donald_Rumsfeld']
const PER_IDENTITY = 5
// 4 identities × 3 images per batch: 2 identities on each of 2 ranks.
const TRAIN = ['--arch', 'tiny', '--tiny-widths', '8,16', '--input-size', '32', '--batch-identities', '4', '--batch-images', '3', '--negatives', '0', '--device', 'cpu', '--threads', '1', '--seed', '5']

let dir = ''
let data = ''

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facenet-dist-'))
  data = join(dir, 'faces')
  await copyLfwPhotos(data, IDENTITIES, PER_IDENTITY)
})

async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolvePort(port))
    })
  })
}

const train = (out: string, ...args: string[]) => startCli(['train', '--data', data, ...TRAIN, '--out', out, ...args])

/** Torchrun's variables for rank `rank` of `world` on 127.0.0.1:`port`. */
const rankEnv = (rank: number, world: number, port: number, extra: NodeJS.ProcessEnv = {}) => ({
  RANK: String(rank),
  LOCAL_RANK: String(rank),
  WORLD_SIZE: String(world),
  MASTER_ADDR: '127.0.0.1',
  MASTER_PORT: String(port),
  ...extra,
})

interface StepLine {
  step: number
  loss: number
  triplets: number
  communicationMs: number
}

async function steps(out: string): Promise<StepLine[]> {
  const text = await readFile(join(out, 'train.jsonl'), 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as StepLine & { type: string })
    .filter((line) => line.type === 'step')
}

/** Resolves once `out`'s log holds `count` steps (polled). */
async function stepsLogged(out: string, count: number, done: Promise<CliRun>): Promise<void> {
  let finished = false
  void done.then(() => (finished = true))
  while ((await steps(out)).length < count) {
    if (finished) throw new Error(`the run ended before step ${count}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** The tensor bytes of a safetensors file (after its header). */
async function tensorBytes(file: string): Promise<Buffer> {
  const bytes = await readFile(file)
  return bytes.subarray(8 + Number(bytes.readBigUInt64LE(0)))
}

test.serial('2 ranks (--nproc 2) train 20 steps on the global batch that 1 rank trains on, and only rank 0 writes', async (t) => {
  // A checkpoint after every step, mid-epoch ones included: rank 0 writes them, the others go on.
  const one = await train(join(dir, 'one'), '--max-steps', '20', '--checkpoint-every', '1', '--json').done
  const two = await train(join(dir, 'two'), '--max-steps', '20', '--checkpoint-every', '1', '--json', '--nproc', '2').done
  t.is(one.code, 0, one.stderr)
  t.is(two.code, 0, two.stderr)
  const [a, b] = [await steps(join(dir, 'one')), await steps(join(dir, 'two'))]
  // One writer: 20 lines, not one set per rank.
  t.deepEqual(b.map((s) => s.step), a.map((s) => s.step))
  t.is(b.length, 20)
  // Mined over the global batch: the same triplets counted (semi-hard: one per
  // anchor-positive pair of all 12 images), not over each rank's 6.
  t.deepEqual(b.map((s) => s.triplets), a.map((s) => s.triplets))
  t.true(b.every((s) => s.communicationMs > 0) && a.every((s) => s.communicationMs === 0))
  // Batch norm normalizes by each rank's own half of the batch (as DDP without
  // SyncBatchNorm), so the losses are close, not equal: both runs learn alike.
  const mean = (lines: StepLine[]) => lines.reduce((sum, s) => sum + s.loss, 0) / lines.length
  t.true(Math.abs(mean(b) - mean(a)) < 0.25 * mean(a), `mean loss ${mean(b)} on 2 ranks, ${mean(a)} on 1`)
  t.true(mean(b.slice(10)) < mean(b.slice(0, 10)), 'the 2-rank loss did not fall')
  const summary = JSON.parse(two.stdout.trim().split('\n').pop()!) as { steps: number; model: string }
  t.is(summary.steps, 20)
  t.truthy(await readFile(summary.model))
  t.true((await readdir(join(dir, 'two', 'checkpoints'))).includes(checkpointName(20)))
})

test.serial('SIGTERM to the launcher stops both ranks with a checkpoint; --resume at 2 ranks ends on the weights of an uninterrupted run', async (t) => {
  const whole = await train(join(dir, 'whole'), '--max-steps', '12', '--checkpoint-every', '4', '--nproc', '2').done
  t.is(whole.code, 0, whole.stderr)
  const out = join(dir, 'stopped')
  const run = train(out, '--max-steps', '12', '--checkpoint-every', '4', '--nproc', '2')
  await stepsLogged(out, 3, run.done)
  run.child.kill('SIGTERM')
  const stopped = await run.done
  t.is(stopped.code, 143, stopped.stderr)
  const logged = await steps(out)
  t.true(logged.length >= 3 && logged.length < 12, `${logged.length} steps`)
  const checkpoints = await readdir(join(out, 'checkpoints'))
  t.true(checkpoints.includes(checkpointName(logged.length)), `${checkpoints.join(", ")} for ${logged.length} steps`)
  const resumed = await train(out, '--max-steps', '12', '--checkpoint-every', '4', '--nproc', '2', '--resume').done
  t.is(resumed.code, 0, resumed.stderr)
  t.deepEqual(await tensorBytes(join(out, 'model.safetensors')), await tensorBytes(join(dir, 'whole', 'model.safetensors')))
  // Another world size would not continue the same run.
  const single = await train(out, '--max-steps', '14', '--resume').done
  t.not(single.code, 0)
  t.regex(single.stderr, /trained on 2 rank\(s\), this run has 1: resume at the world size it was saved at/)
})

test.serial('SIGKILL of one rank stops the other with an error naming the lost rank', async (t) => {
  const port = await freePort()
  const out = join(dir, 'killed')
  const rank0 = startCli(['train', '--data', data, ...TRAIN, '--out', out, '--max-steps', '100000'], rankEnv(0, 2, port))
  const rank1 = startCli(['train', '--data', data, ...TRAIN, '--out', out, '--max-steps', '100000'], rankEnv(1, 2, port))
  await stepsLogged(out, 2, rank0.done)
  rank1.child.kill('SIGKILL')
  const [survivor, killed] = await Promise.all([rank0.done, rank1.done])
  t.is(killed.signal, 'SIGKILL')
  t.is(survivor.code, 1, survivor.stderr)
  t.regex(survivor.stderr, /lost rank 1 \(its process is gone; group at 127\.0\.0\.1:\d+\)/)
  t.regex(survivor.stderr, /\[ERR_DIST_PEER_LOST\]/)
})

test.serial('a rank that cannot reach MASTER_ADDR fails with the address', async (t) => {
  const port = await freePort()
  const run = await startCli(['train', '--data', data, ...TRAIN, '--out', join(dir, 'alone'), '--max-steps', '1'], rankEnv(1, 2, port, { FACENET_DIST_TIMEOUT: '2' })).done
  t.is(run.code, 1, run.stderr)
  t.regex(run.stderr, new RegExp(`rank 1 of 2 cannot reach MASTER_ADDR 127\\.0\\.0\\.1:${port}`))
  t.regex(run.stderr, /\[ERR_DIST_UNREACHABLE\]/)
})

test('distributedFromEnv reads torchrun\'s variables, and refuses bad ones by name', (t) => {
  t.is(distributedFromEnv({}), undefined)
  t.deepEqual(distributedFromEnv({ RANK: '1', WORLD_SIZE: '4', LOCAL_RANK: '1', MASTER_ADDR: 'node0', MASTER_PORT: '29500', FACENET_DIST_TIMEOUT: '60', GLOO_SOCKET_IFNAME: 'eth1' }), {
    rank: 1,
    worldSize: 4,
    masterAddr: 'node0',
    masterPort: 29500,
    timeoutSeconds: 60,
    interface: 'eth1',
  })
  t.throws(() => distributedFromEnv({ WORLD_SIZE: '2', MASTER_ADDR: 'a', MASTER_PORT: '1' }), { instanceOf: InvalidArgumentError, message: /RANK must be a non-negative integer, got nothing/ })
  t.throws(() => distributedFromEnv({ WORLD_SIZE: '2', RANK: '0', MASTER_PORT: '1' }), { message: /MASTER_ADDR/ })
})

test('a Trainer refuses distributed settings it cannot use, before joining anything', async (t) => {
  const model = await FaceNet.create({ arch: 'tiny', device: 'cpu', tiny: { widths: [8, 16], inputSize: 32 } })
  const base = { rank: 0, worldSize: 2, masterAddr: '127.0.0.1', masterPort: 29500 }
  t.throws(() => new Trainer(model, { distributed: { ...base, rank: 2 } }), { message: /distributed.rank must be an integer in 0..1, got 2/ })
  t.throws(() => new Trainer(model, { distributed: { ...base, masterPort: 70000 } }), { message: /masterPort must be a port in 1..65535, got 70000/ })
  t.throws(() => new Trainer(model, { mining: 'epoch', distributed: base }), { message: /mining 'epoch'/ })
  t.throws(() => new Trainer(model, { distributed: { ...base, bogus: 1 } as never }), { message: /unknown option 'bogus'/ })
  model.dispose()
})

test("the samplers' shards, in rank order, are the batch one process draws", (t) => {
  // 7 identities of 2–5 images, then 5 single-image ones (negatives).
  const labels = Int32Array.from([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4, 4, 4, 4, 5, 5, 6, 6, 6, 7, 8, 9, 10, 11])
  const options = { P: 5, K: 3, negatives: 3, seed: 9 }
  const whole = new PKSampler(labels, options)
  const ranks = [0, 1].map((rank) => new PKSampler(labels, { ...options, shard: { rank, worldSize: 2 } }))
  for (let step = 0; step < 5; step++) {
    const batch = whole.next()
    const [a, b] = ranks.map((r) => r.next())
    // P×K part first, then the negatives: rank 0 has 2 of the 5 identities and 1 of the 3 negatives.
    const identities = (s: { labels: Int32Array }) => new Set([...s.labels].filter((l) => l < 7)).size
    t.deepEqual([identities(a!), identities(b!)], [2, 3])
    const joined = [...a!.indices.subarray(0, a!.indices.length - 1), ...b!.indices.subarray(0, b!.indices.length - 2), ...a!.indices.subarray(-1), ...b!.indices.subarray(-2)]
    t.deepEqual(joined, [...batch.indices], `batch ${step}`)
  }
  const shuffled = new ShuffleSampler(labels, { batchSize: 8, seed: 2 })
  const shards = [0, 1].map((rank) => new ShuffleSampler(labels, { batchSize: 8, seed: 2, shard: { rank, worldSize: 2 } }))
  t.deepEqual([...shards[0]!.next().indices, ...shards[1]!.next().indices], [...shuffled.next().indices])
  t.throws(() => new PKSampler(labels, { P: 1, K: 3, shard: { rank: 0, worldSize: 2 } }), { message: /a batch of 1 identities .* cannot be shared by 2 ranks/ })
  t.throws(() => new ShuffleSampler(labels, { batchSize: 3, shard: { rank: 0, worldSize: 2 } }), { message: /each rank needs at least 2; raise batchSize/ })
  t.throws(() => new PKSampler(labels, { shard: { rank: 2, worldSize: 2 } }), { message: /got rank 2 of 2/ })
})
