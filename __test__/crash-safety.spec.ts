/**
 * Crash safety: a training process SIGKILLed at random moments (many of them inside a
 * checkpoint write) never loses the newest complete checkpoint, never leaves a partial
 * file under a checkpoint's name, and resumes from it to the exact weights of an
 * uninterrupted run. And a full disk during a save leaves the previous file intact.
 *
 * FACENET_KILL_TRIALS=N runs N kill trials instead of 20.
 */
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { readFileSync, watch } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { FaceNet, latestCheckpoint, Trainer, WeightsError } from '../src'
import { createModel, makeSource, trainerOptions } from '../scripts/reliability-train'

const ROOT = resolve(__dirname, '..')
const SCRIPT = join(ROOT, 'scripts', 'reliability-train.ts')
const TRIALS = Number(process.env.FACENET_KILL_TRIALS ?? 20)

let tmp: string
test.before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'facenet-crash-'))
})
test.after.always(async () => {
  await rm(tmp, { recursive: true, force: true })
})

const stepOf = (file: string): number => Number(/step-(\d+)\.ckpt$/.exec(file)![1])

/** Where a checkpoint's data order stands, from its safetensors header (for messages). */
function position(file: string): string {
  const bytes = readFileSync(file)
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'))
  const state = JSON.parse(header.__metadata__.checkpoint)
  return `step ${state.step} epoch ${state.epoch} batch ${state.batch}, ${header.__metadata__.updates} updates`
}

/** A seeded xorshift, so a failing trial schedule can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s / 2 ** 32
  }
}

interface Run {
  /** The step the child resumed from (`start` line), if it got that far. */
  start?: number
  /** The last `step` line seen before the kill. */
  lastStep: number
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
}

/**
 * Runs the training script on `dir`. `killAt(step)` is called on every step line and
 * returns a delay in ms after which to SIGKILL the child, `'write'` to SIGKILL it as soon
 * as its next checkpoint's temporary file appears (inotify), or undefined to keep going.
 */
function runChild(dir: string, maxSteps: number, killAt: (step: number) => number | 'write' | undefined): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['--import=tsx', SCRIPT, dir, String(maxSteps)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    const run: Run = { lastStep: -1, code: null, signal: null, stderr: '' }
    let armed = false
    const watcher = watch(dir, (_, name) => {
      if (armed && name?.startsWith('.step-') && name.includes('.tmp-')) {
        armed = false
        child.kill('SIGKILL')
      }
    })
    let buffered = ''
    let killing = false
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk
      let newline
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        const [word, value] = line.split(' ')
        if (word === 'start') run.start = Number(value)
        // Lines written before the kill still arrive after it: the pipe outlives the child.
        if (word === 'step') run.lastStep = Number(value)
        if (word === 'step' && !killing) {
          const delay = killAt(run.lastStep)
          if (delay !== undefined) {
            killing = true
            if (delay === 'write') armed = true
            else setTimeout(() => child.kill('SIGKILL'), delay)
          }
        }
      }
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => (run.stderr += chunk))
    child.on('error', fail)
    child.on('close', (code, signal) => {
      watcher.close()
      run.code = code
      run.signal = signal
      done(run)
    })
  })
}

const probe = new Uint8Array(4 * 64 * 64 * 3).map((_, i) => (i * 37) % 251)

async function embedFile(file: string): Promise<Float32Array> {
  const model = await FaceNet.load(file, { threads: 1, device: 'cpu' })
  try {
    return await model.embed(probe)
  } finally {
    model.dispose()
  }
}

/**
 * Embeddings of the probe images after `step` steps of one uninterrupted run, in this
 * process; the run is extended on demand and keeps every checkpoint.
 */
const reference = { dir: '', steps: 0, model: undefined as FaceNet | undefined, trainer: undefined as Trainer | undefined }
async function referenceAt(step: number): Promise<Float32Array> {
  if (!reference.trainer) {
    reference.dir = join(tmp, 'reference')
    reference.model = await createModel()
    reference.trainer = new Trainer(reference.model, { ...trainerOptions(reference.dir), keepCheckpoints: 1_000_000 })
  }
  if (step > reference.steps) {
    const resume = await latestCheckpoint(reference.dir)
    await reference.trainer.fit(makeSource(), { epochs: 1_000_000, maxSteps: step, ...(resume ? { resume } : {}) })
    reference.steps = step
  }
  return embedFile(join(reference.dir, `step-${String(step).padStart(8, '0')}.ckpt`))
}
test.after.always(() => reference.model?.dispose())

test.serial(`SIGKILL at random moments in ${TRIALS} trials: the newest complete checkpoint always loads and training resumes from it exactly`, async (t) => {
  const dir = join(tmp, 'kills')
  await mkdir(dir)
  const seed = Number(process.env.FACENET_KILL_SEED ?? 20240607)
  const random = prng(seed)
  t.log(`kill schedule seed ${seed} (FACENET_KILL_SEED replays it)`)
  let newestConfirmed = 0
  // Checkpoints already loaded once; files are never rewritten in place, only replaced.
  const verified = new Set<string>()
  let leftTemp = 0
  let resumedCount = 0
  const modes = { 'as a checkpoint write began': 0, 'at a random moment of a later step': 0 }
  for (let trial = 0; trial < TRIALS; trial++) {
    // Half the kills land inside a checkpoint write (as soon as its temporary file is
    // created); the rest at a random time a few steps in.
    const atWrite = trial % 2 === 0
    const target = 1 + Math.floor(random() * 3)
    const delay = atWrite ? ('write' as const) : 1 + Math.floor(random() * 120)
    modes[atWrite ? 'as a checkpoint write began' : 'at a random moment of a later step'] += 1
    let seen = 0
    const run = await runChild(dir, 1_000_000, () => (++seen >= target ? delay : undefined))
    t.is(run.signal, 'SIGKILL', `trial ${trial}: the child ended by itself (code ${run.code}): ${run.stderr}`)
    if (trial > 0) {
      // The child printed `start X` only after resuming from the newest checkpoint.
      t.is(run.start, newestConfirmed, `trial ${trial} resumed from step ${run.start}, the newest checkpoint was ${newestConfirmed}`)
      resumedCount += 1
    }
    const entries = await readdir(dir)
    if (entries.some((name) => name.includes('.tmp-'))) leftTemp += 1
    const latest = await latestCheckpoint(dir)
    // Only a kill inside the very first checkpoint write leaves none; training then restarts.
    const latestStep = latest ? stepOf(latest) : 0
    t.true(latest !== undefined || run.lastStep <= 1, `trial ${trial}: no checkpoint after ${run.lastStep} steps`)
    t.false(latest !== undefined && basename(latest).startsWith('.'), 'a temporary file was picked as a checkpoint')
    // Step n's line is printed before checkpoint n is written and after checkpoint n−1
    // completed, so the newest complete checkpoint is n−1 or n.
    t.true(latestStep >= run.lastStep - 1 && latestStep <= run.lastStep, `trial ${trial}: newest checkpoint ${latestStep}, last step seen ${run.lastStep}`)
    t.true(latestStep >= newestConfirmed, `trial ${trial}: checkpoint ${newestConfirmed} was lost`)
    // No partial file ever sits under a checkpoint's name: every one of them loads.
    for (const name of entries.filter((n) => /^step-\d+\.ckpt$/.test(n) && !verified.has(n))) {
      const embeddings = await embedFile(join(dir, name))
      t.true(embeddings.every(Number.isFinite), name)
      verified.add(name)
    }
    newestConfirmed = latestStep
    if (!latest) continue
    // Bit-identical to the uninterrupted run at the same step.
    const expected = await referenceAt(latestStep)
    t.deepEqual(await embedFile(latest!), expected, `trial ${trial} (kill ${atWrite ? 'at a write' : `after ${delay} ms`}): checkpoint ${latestStep} (${position(latest!)}) differs from the uninterrupted run (${position(join(reference.dir, basename(latest!)))})`)
  }
  // A last, uninterrupted run resumes and finishes; it also clears the temp files that
  // killed writers left behind.
  const finalSteps = newestConfirmed + 2
  const last = await runChild(dir, finalSteps, () => undefined)
  t.is(last.code, 0, last.stderr)
  t.is(last.start, newestConfirmed)
  const latest = (await latestCheckpoint(dir))!
  t.is(stepOf(latest), finalSteps)
  t.deepEqual((await readdir(dir)).filter((n) => n.includes('.tmp-')), [], 'temp files of killed writers were not cleaned up')

  t.deepEqual(await embedFile(latest), await referenceAt(finalSteps))
  t.log(
    `${TRIALS} SIGKILL trials (${Object.entries(modes).map(([k, v]) => `${v} ${k}`).join(', ')}); ` +
      `${leftTemp} left a temporary file behind (killed mid-write); ${resumedCount} resumed from the newest checkpoint; ` +
      `the chain reached step ${finalSteps} with weights identical to an uninterrupted run`,
  )
})

/** Mounts a small tmpfs; undefined (with the reason) where this machine does not allow it. */
function mountTmpfs(dir: string, size: string): string | undefined {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return 'mounting a tmpfs needs root on Linux'
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' })
  return result.status === 0 ? undefined : `mount -t tmpfs failed: ${result.stderr || result.error?.message}`
}

test.serial('a full disk (ENOSPC on a small tmpfs) during a save: a clear WeightsError, the previous checkpoint and weights file intact', async (t) => {
  const disk = join(tmp, 'small-disk')
  await mkdir(disk)
  // A checkpoint of the test model is about 4.7 MB: the first fits in 8 MB, a second one
  // (written beside it before the rename) does not.
  const refused = mountTmpfs(disk, '8m')
  if (refused) {
    t.log(`skipped: ${refused}`)
    t.pass()
    return
  }
  try {
    const model = await createModel()
    const dir = join(disk, 'ckpt')
    const trainer = new Trainer(model, trainerOptions(dir))
    let first: Buffer | undefined
    const error = await t.throwsAsync(
      trainer.fit(makeSource(), {
        epochs: 1000,
        maxSteps: 5,
        onStep: (s) => {
          // Step 2's line comes after checkpoint 1 is complete and before checkpoint 2.
          if (s.step === 2) first = readFileSync(join(dir, 'step-00000001.ckpt'))
        },
      }),
      { instanceOf: WeightsError },
    )
    t.is(error?.code, 'ERR_WEIGHTS')
    t.regex(error!.message, /step-00000002\.ckpt: could not write the weights file: No space left on device/)
    t.deepEqual(await readdir(dir), ['step-00000001.ckpt'], 'the failed write left files behind')
    t.truthy(first)
    t.true((await readFile(join(dir, 'step-00000001.ckpt'))).equals(first!), 'the previous checkpoint changed')
    // It still resumes.
    const resumed = await createModel()
    const result = await new Trainer(resumed, trainerOptions()).fit(makeSource(), { epochs: 1000, maxSteps: 2, resume: join(dir, 'step-00000001.ckpt') })
    t.is(result.steps, 2)
    resumed.dispose()

    // FaceNet.save over an existing file on a full disk keeps the old file.
    await rm(dir, { recursive: true })
    const weights = join(disk, 'model.safetensors')
    await model.save(weights)
    const before = await readFile(weights)
    // 8 MB − 2.4 MB of weights − 4.5 MB of filler leaves less than another 2.4 MB.
    await writeFile(join(disk, 'filler'), Buffer.alloc(4.5 * 1024 * 1024))
    const full = await t.throwsAsync(model.save(weights), { instanceOf: WeightsError })
    t.regex(full!.message, /model\.safetensors: could not write the weights file: No space left on device/)
    t.true((await readFile(weights)).equals(before))
    t.deepEqual((await readdir(disk)).sort(), ['filler', 'model.safetensors'])
    model.dispose()
  } finally {
    spawnSync('umount', [disk])
  }
})
