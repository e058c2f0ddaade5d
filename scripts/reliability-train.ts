/**
 * The training process the crash-safety spec (__test__/reliability-crash.spec.ts) kills
 * with SIGKILL: a `tiny` model trained on a handful of generated images, checkpointing
 * after every step into the folder given as the first argument, and resuming from the
 * newest checkpoint there when one exists. Prints `start <step>` once resumed and
 * `step <n>` after each step; the parent reads these to time its kills.
 *
 *   node --import=tsx scripts/reliability-train.ts <checkpointDir> [maxSteps]
 */
import { FaceNet, latestCheckpoint, Trainer, type ImageSource, type TrainerOptions } from '../src'

export const IDENTITIES = 4
export const PER_IDENTITY = 3
const SIDE = 64

/** Deterministic images: each identity has its own base pattern plus per-image noise. */
export function makeSource(): ImageSource {
  const count = IDENTITIES * PER_IDENTITY
  const images = Array.from({ length: count }, (_, i) => {
    const identity = Math.floor(i / PER_IDENTITY)
    const data = Buffer.alloc(SIDE * SIDE * 3)
    let state = (i + 1) * 2654435761
    for (let p = 0; p < data.length; p++) {
      state = (state ^ (state << 13)) >>> 0
      state = (state ^ (state >>> 17)) >>> 0
      state = (state ^ (state << 5)) >>> 0
      data[p] = ((identity * 61 + (p % 192)) % 256) ^ (state & 0x1f)
    }
    return data
  })
  return {
    identities: Array.from({ length: IDENTITIES }, (_, i) => `id${i}`),
    labels: Int32Array.from({ length: count }, (_, i) => Math.floor(i / PER_IDENTITY)),
    length: count,
    input: (index) => ({ kind: 'raw', name: `image${index}`, data: images[index]!, height: SIDE, width: SIDE }),
  }
}

export function trainerOptions(checkpointDir?: string): TrainerOptions {
  return {
    identitiesPerBatch: 3,
    imagesPerIdentity: 2,
    negativesPerBatch: 0,
    augment: false,
    lr: 0.01,
    seed: 3,
    prefetch: 1,
    ...(checkpointDir ? { checkpointDir, checkpointEvery: 1, keepCheckpoints: 3 } : {}),
  }
}

export function createModel(): Promise<FaceNet> {
  return FaceNet.create({ arch: 'tiny', embeddingDim: 16, device: 'cpu', seed: 11, threads: 1 })
}

async function main(): Promise<void> {
  const [dir, maxStepsArg] = process.argv.slice(2)
  if (!dir) throw new Error('usage: reliability-train.ts <checkpointDir> [maxSteps]')
  const model = await createModel()
  const trainer = new Trainer(model, trainerOptions(dir))
  const resume = await latestCheckpoint(dir)
  let started = false
  await trainer.fit(makeSource(), {
    epochs: 1_000_000,
    maxSteps: Number(maxStepsArg ?? 1_000_000),
    ...(resume ? { resume } : {}),
    onStep: (s) => {
      if (!started) {
        started = true
        process.stdout.write(`start ${s.step - 1}\n`)
      }
      process.stdout.write(`step ${s.step} epoch ${s.epoch} batch ${s.batch} loss ${s.loss}\n`)
    },
  })
  model.dispose()
  process.stdout.write('done\n')
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error)
    process.exit(1)
  })
}
