/**
 * What only a CUDA machine can show, in one short run (bench/gpu/run.sh calls it): the
 * Trainer on CUDA in fp32 and in bf16 autocast, CPU and CUDA embeddings of the same
 * weights, a checkpoint written on CUDA and resumed, and the NaN guard on CUDA.
 * Each check prints one JSON line {check, ok, ...}; the exit code is the number of
 * failed checks.
 *
 *   npx tsx bench/cuda-check.ts [device=cuda] [arch=nn4] [steps=30]
 */
import { cpSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { type Arch, type Device, devices, FaceNet, ImageFolder, NonFiniteError, type Precision, Trainer } from '../src'

const device = (process.argv[2] ?? 'cuda') as Device
const arch = (process.argv[3] ?? 'nn4') as Arch
const steps = Number(process.argv[4] ?? 30)
const root = resolve(__dirname, '..', 'data', 'lfw')
const IDENTITIES = ['Ariel_Sharon', 'Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair', 'Donald_Rumsfeld', 'Hugo_Chavez']
const batch = { identitiesPerBatch: 8, imagesPerIdentity: 8, negativesPerBatch: 0 }
let failed = 0

async function check(name: string, body: () => Promise<Record<string, unknown> & { ok: boolean }>): Promise<void> {
  const started = performance.now()
  try {
    const result = await body()
    if (!result.ok) failed++
    console.log(JSON.stringify({ check: name, ...result, seconds: (performance.now() - started) / 1000 }))
  } catch (error) {
    failed++
    console.log(JSON.stringify({ check: name, ok: false, error: String((error as Error).stack ?? error) }))
  }
}

function pixels(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length)
  let state = seed >>> 0
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    out[i] = state >>> 24
  }
  return out
}

async function main(): Promise<void> {
  const report = devices()
  console.log(JSON.stringify({ check: 'devices', ok: report.cudaAvailable, ...report }))
  const dir = mkdtempSync(join(tmpdir(), 'facenet-cuda-'))
  // Only these identities need to travel to the GPU machine, so open a folder of just them.
  for (const name of IDENTITIES) cpSync(join(root, name), join(dir, 'data', name), { recursive: true })
  const folder = await ImageFolder.open(join(dir, 'data'))

  // The same weights on both devices: cuDNN may use TF32 for convolutions, so agreement is
  // to about 1e-3, not bit-exact.
  await check('cpu-and-cuda-embeddings-agree', async () => {
    const cpu = await FaceNet.create({ arch, device: 'cpu', seed: 1 })
    const file = join(dir, 'init.safetensors')
    await cpu.save(file)
    const gpu = await FaceNet.load(file, { device })
    const { height, width } = cpu.inputSize
    const images = { data: pixels(8 * height * width * 3, 3), shape: [8, height, width, 3] as const }
    const a = await cpu.embed(images)
    const b = await gpu.embed(images)
    const c = await gpu.embed(images, { precision: 'bf16' })
    let maxDiff = 0
    let minCosineBf16 = 1
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!))
    const dim = cpu.embeddingDim
    for (let row = 0; row < 8; row++) {
      let cosine = 0
      for (let i = row * dim; i < (row + 1) * dim; i++) cosine += b[i]! * c[i]!
      minCosineBf16 = Math.min(minCosineBf16, cosine)
    }
    cpu.dispose()
    gpu.dispose()
    return { ok: maxDiff < 1e-2 && minCosineBf16 > 0.99, device: gpu.device, maxDiff, minCosineBf16 }
  })

  for (const precision of ['fp32', 'bf16'] as Precision[]) {
    await check(`trainer-${precision}`, async () => {
      const model = await FaceNet.create({ arch, device, seed: 2 })
      const losses: number[] = []
      const rates: number[] = []
      const trainer = new Trainer(model, { ...batch, optimizer: 'adam', lr: 1e-3, precision, seed: 1, checkpointDir: join(dir, precision), checkpointEvery: 10 })
      const result = await trainer.fit(folder, {
        epochs: 1000,
        maxSteps: steps,
        onStep: (s) => {
          losses.push(s.loss)
          rates.push(s.imagesPerSecond)
        },
      })
      const head = losses.slice(0, 5).reduce((x, y) => x + y, 0) / 5
      const tail = losses.slice(-5).reduce((x, y) => x + y, 0) / 5
      const sorted = rates.slice(2).sort((x, y) => x - y)
      model.dispose()
      return {
        ok: losses.length === steps && losses.every(Number.isFinite) && tail < head,
        arch,
        device: model.device,
        steps: result.steps,
        meanLossFirst5: head,
        meanLossLast5: tail,
        medianImagesPerSecond: sorted[Math.floor(sorted.length / 2)],
        lastCheckpoint: result.lastCheckpoint,
      }
    })
  }

  // Resume on CUDA: cuDNN's backward is not deterministic, so the resumed losses are
  // compared within a tolerance, not bit for bit as on the CPU.
  await check('resume-on-cuda', async () => {
    const run = async (resume?: string) => {
      const model = await FaceNet.create({ arch, device, seed: 3 })
      const losses: number[] = []
      const trainer = new Trainer(model, { ...batch, optimizer: 'sgd', momentum: 0.9, lr: 0.01, seed: 4, checkpointDir: join(dir, resume ? 'resumed' : 'straight'), checkpointEvery: 3, keepCheckpoints: 10 })
      await trainer.fit(folder, { epochs: 1000, maxSteps: 6, onStep: (s) => losses.push(s.loss), ...(resume ? { resume } : {}) })
      model.dispose()
      return losses
    }
    const straight = await run()
    const resumed = await run(join(dir, 'straight', 'step-00000003.ckpt'))
    const diffs = resumed.map((loss, i) => Math.abs(loss - straight[i + 3]!))
    return { ok: resumed.length === 3 && Math.max(...diffs) < 1e-2, straight, resumed, maxDiff: Math.max(...diffs) }
  })

  await check('nan-guard-on-cuda', async () => {
    const model = await FaceNet.create({ arch: 'tiny', device, seed: 1 })
    const trainer = new Trainer(model, { ...batch, optimizer: 'sgd', lr: 1e30 })
    try {
      await trainer.fit(folder, { epochs: 100 })
      return { ok: false, error: 'no NonFiniteError' }
    } catch (error) {
      return { ok: error instanceof NonFiniteError, message: (error as Error).message }
    } finally {
      model.dispose()
    }
  })
}

main()
  .then(() => process.exit(failed))
  .catch((error) => {
    console.error(error)
    process.exit(100)
  })
