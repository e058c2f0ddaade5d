/**
 * The one training process that the kill-and-resume specs kill with SIGKILL and start
 * again (__test__/crash-safety.spec.ts, __test__/trainer.spec.ts). It trains `tiny`,
 * checkpointing after every step into the folder given as the first argument, and resumes
 * from `--resume FILE`, else from the newest checkpoint there. Prints `start <step>` once
 * resumed and `step <n> epoch <e> batch <b> loss <l>` after each step; the parent reads
 * these to time its kills. Two recipes:
 * - `generated` (default): a handful of generated images, AdaGrad, no augmentation.
 * - `lfw`: six identities of the shipped LFW, decoded and augmented, SGD with momentum,
 *   so that a resume must restore the momentum buffers and the augmentation's generator.
 * - `finetune`: the `lfw` data and optimizer on the pretrained `dlib-resnet-v1`, all but its
 *   last two blocks frozen and the last residual unit at a tenth of the head's rate.
 *
 *   node --import=tsx scripts/reliability-train.ts <checkpointDir> [maxSteps] [--recipe lfw] [--packed DIR] [--resume FILE] [--save FILE]
 */
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { FaceNet, ImageFolder, latestCheckpoint, NpyDataset, Trainer, type ImageSource, type TrainerOptions } from '../src'

export const IDENTITIES = 4
export const PER_IDENTITY = 3
const SIDE = 64

/** The LFW identities of the `lfw` recipe. */
export const LFW_IDENTITIES = ['Ariel_Sharon', 'Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair']

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

interface Recipe {
  model: () => Promise<FaceNet>
  data: (packed?: string) => Promise<ImageSource>
  options: (checkpointDir: string) => TrainerOptions
  epochs: number
}

/** The LFW recipes' optimizer and batches; the fine-tune adds its freezing on top. */
function lfwOptions(checkpointDir: string): TrainerOptions {
  return {
    optimizer: 'sgd',
    momentum: 0.9,
    lr: 0.01,
    identitiesPerBatch: 3,
    imagesPerIdentity: 4,
    negativesPerBatch: 0,
    checkpointDir,
    checkpointEvery: 1,
    keepCheckpoints: 100,
    seed: 5,
  }
}

const lfwFolder = async (): Promise<ImageSource> => (await ImageFolder.open(resolve(__dirname, '..', 'data', 'lfw'))).subset(LFW_IDENTITIES)

const RECIPES: Record<string, Recipe> = {
  generated: { model: createModel, data: async () => makeSource(), options: trainerOptions, epochs: 1_000_000 },
  lfw: {
    model: () => FaceNet.create({ arch: 'tiny', seed: 1, device: 'cpu', threads: 1 }),
    // `--packed DIR`: the same identities from a `facenet pack` output.
    data: async (packed) => (packed ? await NpyDataset.open({ images: join(packed, 'images.npy'), names: join(packed, 'names.npy') }) : await lfwFolder()),
    options: lfwOptions,
    epochs: 100,
  },
  finetune: {
    model: () => FaceNet.pretrained('dlib-resnet-v1', { device: 'cpu', threads: 1 }),
    data: lfwFolder,
    options: (checkpointDir) => ({ ...lfwOptions(checkpointDir), trainLastBlocks: 2, lrGroups: [{ prefixes: ['units.13'], lr: 0.001 }] }),
    epochs: 100,
  },
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { recipe: { type: 'string', default: 'generated' }, resume: { type: 'string' }, save: { type: 'string' }, packed: { type: 'string' } },
  })
  const [dir, maxStepsArg] = positionals
  const recipe = RECIPES[values.recipe]
  if (!dir || !recipe) throw new Error('usage: reliability-train.ts <checkpointDir> [maxSteps] [--recipe generated|lfw|finetune] [--packed DIR] [--resume FILE] [--save FILE]')
  const model = await recipe.model()
  const trainer = new Trainer(model, recipe.options(dir))
  const resume = values.resume ?? (await latestCheckpoint(dir))
  let started = false
  await trainer.fit(await recipe.data(values.packed), {
    epochs: recipe.epochs,
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
  if (values.save) await model.save(values.save)
  model.dispose()
  process.stdout.write('done\n')
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error)
    process.exit(1)
  })
}
