/**
 * Failure modes: the ten classes of failure a hostile new user found (numbered 1–10 in
 * the titles), each with its example and at least one case of our own. Runs the real `facenet`
 * command as a subprocess (node + tsx on src/cli/index.ts) on a tiny model and 20 LFW
 * images, and the library in-process.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { watch } from 'node:fs'
import { appendFile, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { BusyError, DataError, embedFiles, FaceNet, InvalidArgumentError, NpyDataset, Trainer, WeightsError } from '../src'
import { npyBytes } from '../src/cli/use'
import { createModel, makeSource, trainerOptions } from '../scripts/reliability-train'
import { copyLfwPhotos, startCli, type CliRun } from './helpers'

const ROOT = resolve(__dirname, '..')
const IDENTITIES = ['Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair']
const PER_IDENTITY = 4
const AS_ROOT = process.getuid?.() === 0

type Run = CliRun
const start = startCli

const cli = (...args: string[]): Promise<Run> => start(args).done

let dir = ''
let faces = ''
const CPU = ['--device', 'cpu', '--threads', '1']
// 5 identities, 2 per batch: 3 batches an epoch.
const trainArgs = (data: string, out: string, ...more: string[]) => ['train', '--data', data, '--out', out, '--arch', 'tiny', '--embedding-dim', '16', '--batch-identities', '2', '--batch-images', '2', '--negatives', '0', ...CPU, ...more]

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facenet-rel2-'))
  faces = join(dir, 'faces')
  await copyLfwPhotos(faces, IDENTITIES, PER_IDENTITY)
  const model = await FaceNet.create({ arch: 'tiny', embeddingDim: 8, device: 'cpu', threads: 1 })
  await model.save(join(dir, 'finite.safetensors'))
  model.dispose()
})

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function copyFaces(name: string): Promise<string> {
  const to = join(dir, name)
  for (const id of IDENTITIES) {
    await mkdir(join(to, id), { recursive: true })
    for (const f of await readdir(join(faces, id))) await copyFile(join(faces, id, f), join(to, id, f))
  }
  return to
}

async function logRows(out: string): Promise<{ type: string; step?: number; epoch?: number; steps?: number }[]> {
  const text = await readFile(join(out, 'train.jsonl'), 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .flatMap((line) => {
      try {
        return [JSON.parse(line)]
      } catch {
        return []
      }
    })
}

const stepsOf = async (out: string) => (await logRows(out)).filter((r) => r.type === 'step').map((r) => r.step!)
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const checkpoints = async (out: string) => (await readdir(join(out, 'checkpoints')).catch(() => [] as string[])).filter((n) => /^step-\d+\.ckpt$/.test(n)).sort()
const stepOfName = (name: string) => Number(/step-(\d+)\.ckpt$/.exec(name)![1])
const exists = (path: string) => stat(path).then(() => true, () => false)

/** Resolves once train.jsonl in `out` holds at least `n` step lines. */
async function untilSteps(out: string, n: number, child: { exitCode: number | null }): Promise<void> {
  while ((await stepsOf(out)).length < n) {
    if (child.exitCode !== null) throw new Error(`the run ended (${child.exitCode}) before ${n} steps`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A user error is reported in one or two lines, never as a stack trace. */
function noStack(t: { false: (v: boolean, m?: string) => void }, run: Run): void {
  t.false(/\n\s+at .+:\d+:\d+\)?/.test(run.stderr), `stack trace in: ${run.stderr}`)
}

// ── 1. one run per folder ─────────────────────────────────────────────────────────────
// ── 2. SIGTERM behaves like Ctrl-C ───────────────────────────────────────────────────

test.serial('1+2: a second train or --resume on a busy --out exits 2 naming the holder; SIGTERM then checkpoints the last step and exits 143', async (t) => {
  const out = join(dir, 'busy')
  const first = start(trainArgs(faces, out, '--epochs', '100000'))
  await untilSteps(out, 3, first.child)
  const lock = JSON.parse(await readFile(join(out, '.facenet.lock'), 'utf8'))
  t.is(lock.pid, first.child.pid)
  for (const extra of [[], ['--resume'], ['--overwrite']]) {
    const second = await cli(...trainArgs(faces, out, '--max-steps', '2', ...extra))
    t.is(second.code, 2, second.stderr)
    t.regex(second.stderr, new RegExp(`in use by another run \\(pid ${first.child.pid} on host `))
    noStack(t, second)
  }
  first.child.kill('SIGTERM')
  const run = await first.done
  t.is(run.code, 143, run.stderr)
  t.regex(run.stderr, /SIGTERM: finishing the step in flight and writing a checkpoint/)
  const steps = await stepsOf(out)
  t.deepEqual(steps, range(1, steps.length), 'the two runs never interleaved their log lines')
  const newest = (await checkpoints(out)).at(-1)!
  t.is(stepOfName(newest), steps.at(-1)!, 'the checkpoint holds the last step trained')
  t.true(await exists(join(out, 'model.safetensors')))
  t.false(await exists(join(out, '.facenet.lock')), 'the lock is released')
})

test.serial('1: a stale lock (dead PID) or a garbage lock file is taken over; a live lock from another host names that host', async (t) => {
  const out = join(dir, 'stale')
  await mkdir(out, { recursive: true })
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!
  await writeFile(join(out, '.facenet.lock'), JSON.stringify({ pid: dead, host: hostname(), started: '2026-01-01T00:00:00.000Z' }))
  const run = await cli(...trainArgs(faces, out, '--max-steps', '1'))
  t.is(run.code, 0, run.stderr)
  await writeFile(join(out, '.facenet.lock'), '{"pid": tru')
  const again = await cli(...trainArgs(faces, out, '--max-steps', '2', '--resume'))
  t.is(again.code, 0, again.stderr)
  // Another host's PID cannot be checked from here: refused, with how to clear it.
  await writeFile(join(out, '.facenet.lock'), JSON.stringify({ pid: 1, host: 'elsewhere', started: '2026-01-01T00:00:00.000Z' }))
  const other = await cli(...trainArgs(faces, out, '--max-steps', '3', '--resume'))
  t.is(other.code, 2)
  t.regex(other.stderr, /pid 1 on host elsewhere since 2026-01-01T00:00:00\.000Z\); .*if that process is gone, delete .*\.facenet\.lock/)
  t.deepEqual(await stepsOf(out), [1, 2])
})

test('1: a second concurrent fit() on one model is refused with BusyError, also from another Trainer; the first completes and the model trains again after', async (t) => {
  const model = await createModel()
  try {
    const first = new Trainer(model, trainerOptions()).fit(makeSource(), { maxSteps: 4, epochs: 100 })
    await t.throwsAsync(new Trainer(model, trainerOptions()).fit(makeSource(), { maxSteps: 2, epochs: 100 }), { instanceOf: BusyError, message: /already training/ })
    const trainer = new Trainer(model, trainerOptions())
    const steps = trainer.steps(makeSource(), { maxSteps: 2, epochs: 100 })
    await t.throwsAsync(steps.next(), { instanceOf: BusyError })
    t.is((await first).steps, 4)
    // A steps() consumer that stops early gives the model back as well.
    const early = new Trainer(model, trainerOptions()).steps(makeSource(), { maxSteps: 10, epochs: 100 })
    await early.next()
    await early.return(undefined as never)
    t.is((await new Trainer(model, trainerOptions()).fit(makeSource(), { maxSteps: 2, epochs: 100 })).steps, 2)
  } finally {
    model.dispose()
  }
})

// ── 2. SIGHUP, and a second signal ───────────────────────────────────────────────────

test.serial('2: SIGHUP checkpoints the step in flight and exits 129, and the run resumes from it; a second signal quits at once (143) and still frees the folder', async (t) => {
  const out = join(dir, 'hup')
  const first = start(trainArgs(faces, out, '--epochs', '100000'))
  await untilSteps(out, 4, first.child)
  first.child.kill('SIGHUP')
  const run = await first.done
  t.is(run.code, 129, run.stderr)
  const last = (await stepsOf(out)).at(-1)!
  t.is(stepOfName((await checkpoints(out)).at(-1)!), last)
  const resumed = await cli(...trainArgs(faces, out, '--epochs', '100000', '--resume', '--max-steps', String(last + 2)))
  t.is(resumed.code, 0, resumed.stderr)
  t.deepEqual(await stepsOf(out), range(1, last + 2))

  const twice = start(trainArgs(faces, join(dir, 'twice'), '--epochs', '100000'))
  await untilSteps(join(dir, 'twice'), 2, twice.child)
  twice.child.kill('SIGTERM')
  twice.child.kill('SIGTERM')
  const quit = await twice.done
  t.is(quit.code, 143)
  t.false(await exists(join(dir, 'twice', '.facenet.lock')))
})

// ── 3. bad images mid-run, --skip-bad-images, --verify ──────────────────────────────

test.serial('3: a JPEG truncated mid-run stops with a DataError naming it after checkpointing the last step; --resume --skip-bad-images finishes the run', async (t) => {
  const data = await copyFaces('faces-midrun')
  const out = join(dir, 'midrun')
  const first = start(trainArgs(data, out, '--epochs', '100000'))
  await untilSteps(out, 2, first.child)
  const victim = join(data, 'Tony_Blair', (await readdir(join(data, 'Tony_Blair'))).sort()[1]!)
  await truncate(victim, 2000)
  const run = await first.done
  t.is(run.code, 1, run.stderr)
  t.true(run.stderr.includes(victim), run.stderr)
  t.regex(run.stderr, /training stopped at step \d+, saved in .*step-\d+\.ckpt; continue with: facenet train .*--resume.*--on-bad-image skip.*\[ERR_DATA\]/)
  noStack(t, run)
  const last = (await stepsOf(out)).at(-1)!
  t.is(stepOfName((await checkpoints(out)).at(-1)!), last, 'no step was lost')
  const resumed = await cli(...trainArgs(data, out, '--epochs', '100000', '--resume', '--skip-bad-images', '--max-steps', String(last + 6)))
  t.is(resumed.code, 0, resumed.stderr)
  t.true(resumed.stderr.includes(victim), 'the skipped image is reported')
  t.deepEqual(await stepsOf(out), range(1, last + 6))
})

test.serial('3: --verify reports every bad file (a truncated JPEG, text named .jpg) and stops before training; with --skip-bad-images it trains on the rest', async (t) => {
  const data = await copyFaces('faces-verify')
  const truncated = join(data, 'Colin_Powell', (await readdir(join(data, 'Colin_Powell'))).sort()[0]!)
  await truncate(truncated, 1500)
  const text = join(data, 'Jean_Chretien', 'notes.jpg')
  await writeFile(text, 'not an image at all\n')
  const out = join(dir, 'verify')
  const stopped = await cli(...trainArgs(data, out, '--verify', '--max-steps', '2'))
  t.is(stopped.code, 1)
  t.true(stopped.stderr.includes(truncated) && stopped.stderr.includes(text), stopped.stderr)
  t.regex(stopped.stderr, /2 bad image\(s\).*--on-bad-image skip \[ERR_DATA\]/)
  t.false(await exists(join(out, 'train.jsonl')), 'nothing trained')
  t.deepEqual(await checkpoints(out), [])
  const trained = await cli(...trainArgs(data, out, '--verify', '--skip-bad-images', '--max-steps', '2'))
  t.is(trained.code, 0, trained.stderr)
  t.regex(trained.stderr, /verified 19 images of 5 identities, 2 left out/)
  t.deepEqual(await stepsOf(out), [1, 2])
})

// ── 4. degenerate data and options ───────────────────────────────────────────────────

test('4: one identity, or only single-image identities, is a DataError before any step; one identity per batch with no possible negative is refused', async (t) => {
  const model = await createModel()
  try {
    const source = makeSource()
    const one = { ...source, identities: ['id0'], labels: new Int32Array(source.length) }
    await t.throwsAsync(new Trainer(model, trainerOptions()).fit(one, { maxSteps: 2 }), { instanceOf: DataError, message: /has 1 identity.*needs at least 2 identities/ })
    const singles = { ...source, identities: Array.from({ length: source.length }, (_, i) => `p${i}`), labels: Int32Array.from(source.labels, (_, i) => i) }
    await t.throwsAsync(new Trainer(model, trainerOptions()).fit(singles, { maxSteps: 2 }), { instanceOf: DataError, message: /0 of them with 2 or more images/ })
    await t.throwsAsync(new Trainer(model, { ...trainerOptions(), identitiesPerBatch: 1 }).fit(source, { maxSteps: 2 }), {
      instanceOf: InvalidArgumentError,
      message: /identitiesPerBatch 1 makes batches of one identity/,
    })
  } finally {
    model.dispose()
  }
  const lonely = join(dir, 'lonely')
  await mkdir(join(lonely, 'Tony_Blair'), { recursive: true })
  for (const f of await readdir(join(faces, 'Tony_Blair'))) await copyFile(join(faces, 'Tony_Blair', f), join(lonely, 'Tony_Blair', f))
  const run = await cli(...trainArgs(lonely, join(dir, 'lonely-run'), '--max-steps', '2'))
  t.is(run.code, 1)
  t.regex(run.stderr, /lonely: has 1 identity, 1 of them with 2 or more images; triplet training needs at least 2 identities.*\[ERR_DATA\]/)
})

test('4: weights holding NaN or Inf are refused at load naming the tensor; compare with them exits 1 instead of printing "distance NaN"', async (t) => {
  const good = join(dir, 'finite.safetensors')
  const bytes = await readFile(good)
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8'))
  const [name, entry] = Object.entries(header).find(([k]) => k !== '__metadata__') as [string, { data_offsets: [number, number] }]
  for (const [label, value, shown] of [['nan', NaN, 'NaN'], ['inf', Infinity, 'inf']] as const) {
    const bad = Buffer.from(bytes)
    bad.writeFloatLE(value, 8 + Number(bytes.readBigUInt64LE(0)) + entry.data_offsets[0] + 4)
    const file = join(dir, `${label}.safetensors`)
    await writeFile(file, bad)
    const error = await t.throwsAsync(FaceNet.load(file, { device: 'cpu', threads: 1 }), { instanceOf: WeightsError })
    t.true(error!.message.startsWith(file), error!.message)
    t.regex(error!.message, new RegExp(`tensor '${name.replace(/\./g, '\\.')}' holds ${shown} at element 1; weights must be finite`))
  }
  const images = (await readdir(join(faces, 'Tony_Blair'))).map((f) => join(faces, 'Tony_Blair', f))
  const run = await cli('compare', images[0]!, images[1]!, '--model', join(dir, 'nan.safetensors'), ...CPU)
  t.is(run.code, 1)
  t.notRegex(run.stdout, /NaN/)
  t.regex(run.stderr, /weights must be finite \[ERR_WEIGHTS\]/)
})

test('4: float pixels outside 0..255 are refused by embed and by float .npy datasets; 0 and 255 themselves are fine', async (t) => {
  const model = await FaceNet.create({ arch: 'tiny', embeddingDim: 8, device: 'cpu', threads: 1 })
  try {
    const per = 64 * 64 * 3
    for (const value of [255.5, -1, 1e9]) {
      const data = new Float32Array(2 * per).fill(100)
      data[per + 7] = value
      await t.throwsAsync(model.embed(data), { instanceOf: InvalidArgumentError, message: `pixel ${per + 7} (image 1) is ${value}; float pixels must be finite values in 0..255` })
    }
    const edges = new Float32Array(per).map((_, i) => (i % 2 ? 0 : 255))
    t.is((await model.embed(edges)).length, 8)
  } finally {
    model.dispose()
  }
  // A dataset normalized to −1..1 (a common slip) must not be clamped into other images.
  const images = new Float32Array(5 * 4 * 4 * 3).fill(0.5)
  images[5] = -0.25
  const imagesFile = join(dir, 'scaled.npy')
  await writeFile(imagesFile, npyBytes(images, [5, 4, 4, 3]))
  const names = join(ROOT, '__test__', 'fixtures', 'npy', 'names.npy')
  const error = await t.throwsAsync(NpyDataset.open({ images: imagesFile, names }), { instanceOf: DataError })
  t.is(error!.file, imagesFile)
  t.regex(error!.message, /pixel 5 is -0\.25; float images must hold values in 0\.\.255/)
})

test('4: unknown option keys are refused naming the key: FaceNet.create, Trainer (the examples); FaceNet.load, fit, embed, embedFiles, save (ours)', async (t) => {
  const bad = (key: string) => ({ instanceOf: InvalidArgumentError, message: new RegExp(`unknown option '${key}'`) })
  await t.throwsAsync(FaceNet.create({ arch: 'tiny', embedingDim: 8 } as never), bad('embedingDim'))
  await t.throwsAsync(FaceNet.load(join(dir, 'finite.safetensors'), { devcie: 'cpu' } as never), bad('devcie'))
  const model = await createModel()
  try {
    t.throws(() => new Trainer(model, { learningRate: 0.1 } as never), bad('learningRate'))
    await t.throwsAsync(new Trainer(model, trainerOptions()).fit(makeSource(), { epoch: 3 } as never), bad('epoch'))
    await t.throwsAsync(model.embed(new Uint8Array(64 * 64 * 3), { precison: 'bf16' } as never), bad('precison'))
    await t.throwsAsync(embedFiles(model, [], { batch: 4 } as never), bad('batch'))
    await t.throwsAsync(model.save(join(dir, 'x.safetensors'), { meta: {} } as never), bad('meta'))
    t.throws(() => new Trainer(model, { lr: 1e308 }), { instanceOf: InvalidArgumentError, message: "lr must be at most 3.40e+38 (float32's largest), got 1e+308" })
    t.throws(() => new Trainer(model, { margin: -3.5e38 }), { instanceOf: InvalidArgumentError, message: /margin must be a finite number ≥ 0/ })
    t.throws(() => new Trainer(model, { weightDecay: 1e39 }), { instanceOf: InvalidArgumentError, message: /weightDecay must be at most/ })
  } finally {
    model.dispose()
  }
})

// ── 5. special files ─────────────────────────────────────────────────────────────────

test('5: a FIFO, a character device and a folder given to embedFiles are DataErrors (not a regular file), never read', async (t) => {
  t.timeout(60_000, 'a special file was read without end')
  const fifo = join(dir, 'pipe.jpg')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  const folder = join(dir, 'folder.jpg')
  await mkdir(folder)
  const model = await FaceNet.create({ arch: 'tiny', embeddingDim: 8, device: 'cpu', threads: 1 })
  try {
    for (const [path, kind] of [
      [fifo, 'a FIFO'],
      ['/dev/zero', 'a character device'],
      [folder, 'a directory'],
    ] as const) {
      const error = await t.throwsAsync(embedFiles(model, [join(faces, 'Tony_Blair', (await readdir(join(faces, 'Tony_Blair')))[0]!), path]), { instanceOf: DataError })
      t.is(error!.file, path)
      t.true(error!.message.endsWith(`is not a regular file (${kind})`), error!.message)
    }
  } finally {
    model.dispose()
  }
  const run = await cli('embed', fifo, '--model', join(dir, 'finite.safetensors'), ...CPU)
  t.is(run.code, 1)
  t.regex(run.stderr, /pipe\.jpg: is not a regular file \(a FIFO\) \[ERR_DATA\]/)
})

// ── 6. results before optional output ───────────────────────────────────────────────

async function pairsFile(): Promise<string> {
  const numbers = Object.fromEntries(
    await Promise.all(IDENTITIES.map(async (id) => [id, (await readdir(join(faces, id))).sort().map((f) => Number(/_(\d+)\.jpg$/.exec(f)![1]))] as const)),
  )
  const lines = ['2 3']
  for (let fold = 0; fold < 2; fold++) {
    for (let j = 0; j < 3; j++) lines.push(`${IDENTITIES[fold + j]}\t${numbers[IDENTITIES[fold + j]!]![0]}\t${numbers[IDENTITIES[fold + j]!]![1 + fold]}`)
    for (let j = 0; j < 3; j++) lines.push(`${IDENTITIES[j]}\t${numbers[IDENTITIES[j]!]![2]}\t${IDENTITIES[j + 1 + fold]}\t${numbers[IDENTITIES[j + 1 + fold]!]![3]}`)
  }
  const file = join(faces, 'pairs.txt')
  await writeFile(file, lines.join('\n') + '\n')
  return file
}

/**
 * A folder where writing a second copy of `file` fails: a small tmpfs that it nearly
 * fills (as root, whom file modes do not stop), else a read-only folder. Undefined, with
 * why, where neither works.
 */
async function unwritableCopy(file: string, name: string): Promise<{ path: string; undo: () => Promise<void> } | string> {
  const folder = join(dir, name)
  await mkdir(folder)
  const path = join(folder, 'model.safetensors')
  if (AS_ROOT) {
    const size = (await stat(file)).size
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${Math.ceil((size * 1.5) / 4096) * 4096}`, 'tmpfs', folder], { encoding: 'utf8' })
    if (mounted.status !== 0) return `mount -t tmpfs failed: ${mounted.stderr}`
    await copyFile(file, path)
    return { path, undo: async () => void spawnSync('umount', [folder]) }
  }
  await copyFile(file, path)
  await chmod(folder, 0o555)
  return { path, undo: () => chmod(folder, 0o755) }
}

test.serial('6: eval whose threshold cannot be stored (a full disk) or whose report cannot be written still prints its results, then exits 1 saying why', async (t) => {
  const pairs = await pairsFile()
  const target = await unwritableCopy(join(dir, 'finite.safetensors'), 'full-disk')
  if (typeof target === 'string') {
    t.log(`skipped: ${target}`)
    t.pass()
    return
  }
  try {
    await writeFile(join(dir, 'blocker'), 'a file where the report folder would go')
    const run = await cli('eval', '--model', target.path, '--pairs', pairs, '--json', '--report', join(dir, 'blocker', 'report'), ...CPU)
    t.is(run.code, 1, run.stderr)
    const summary = JSON.parse(run.stdout)
    t.is(summary.pairs, 12)
    t.is(typeof summary.accuracy.mean, 'number')
    t.false(summary.thresholdStored)
    t.is(summary.report, null)
    t.is(summary.errors.length, 2)
    t.regex(run.stderr, /the threshold could not be stored in .*model\.safetensors/)
    t.regex(run.stderr, /the report could not be written/)
    noStack(t, run)
    const human = await cli('eval', '--model', target.path, '--pairs', pairs, ...CPU)
    t.is(human.code, 1)
    t.regex(human.stdout, /accuracy\s+\d+\.\d+% ±/)
    t.regex(human.stdout, /threshold\s+\d+\.\d+ \(squared L2\)/)
    // The model file the failed store left is still the model.
    t.true((await readFile(target.path)).equals(await readFile(join(dir, 'finite.safetensors'))))
  } finally {
    await target.undo()
  }
})

// ── 7. user errors are coded, without stack traces ──────────────────────────────────

test.serial('7: --out a file, embed --out into a missing folder, an unreadable subfolder, non-JSON checkpoint metadata, train.jsonl a folder: coded errors and the README exit codes', async (t) => {
  const file = join(dir, 'plain-file')
  await writeFile(file, 'x')
  const outFile = await cli(...trainArgs(faces, file, '--max-steps', '1'))
  t.is(outFile.code, 2)
  t.regex(outFile.stderr, /--out: .*plain-file exists and is not a folder/)

  const model = join(dir, 'finite.safetensors')
  const missing = await cli('embed', faces, '--model', model, '--out', join(dir, 'no-such-folder', 'e.npy'), ...CPU)
  t.is(missing.code, 2)
  t.regex(missing.stderr, /--out: the folder .*no-such-folder does not exist/)

  const tree = join(dir, 'tree')
  await mkdir(join(tree, 'open'), { recursive: true })
  await mkdir(join(tree, 'locked'))
  await copyFile(join(faces, 'Tony_Blair', (await readdir(join(faces, 'Tony_Blair')))[0]!), join(tree, 'open', 'a.jpg'))
  await chmod(join(tree, 'locked'), 0o000)
  let unreadable: Run
  if (AS_ROOT) {
    // root reads any folder whatever its mode, and 'nobody' cannot load libtorch from
    // root's cache: embed's folder walk runs as 'nobody' on its own.
    for (const path of [dir, tree, join(tree, 'open')]) await chmod(path, 0o755)
    const script = join(dir, 'walk.ts')
    await writeFile(
      script,
      `import { listImages } from ${JSON.stringify(join(ROOT, 'src', 'data', 'list-images'))}
listImages(${JSON.stringify(tree)}).then(() => console.log('listed'), (e) => { console.error(e.message + ' [' + e.code + ']'); process.exitCode = 1 })
`,
    )
    await chmod(script, 0o644)
    const child = spawnSync(process.execPath, ['--import=tsx', script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HOME: dir }, uid: 65534, gid: 65534 })
    unreadable = { code: child.status, signal: null, stdout: child.stdout, stderr: child.stderr }
    t.log('the walk ran as uid 65534 (the tests run as root)')
  } else {
    unreadable = await cli('embed', tree, '--model', model, ...CPU)
  }
  await chmod(join(tree, 'locked'), 0o755)
  t.is(unreadable.code, 1, unreadable.stderr)
  t.regex(unreadable.stderr, /tree\/locked: cannot be read \(EACCES\) \[ERR_DATA\]/)

  // A checkpoint whose training state is not JSON (as a hand-edit or a foreign tool leaves it).
  const out = join(dir, 'badmeta')
  t.is((await cli(...trainArgs(faces, out, '--max-steps', '1'))).code, 0)
  const ckpt = join(out, 'checkpoints', (await checkpoints(out))[0]!)
  await rewriteState(ckpt, () => '{"format": "facenet-torch-checkpoint", step')
  const badJson = await cli(...trainArgs(faces, out, '--resume', '--max-steps', '2'))
  t.is(badJson.code, 1)
  t.regex(badJson.stderr, /step-00000001\.ckpt: the checkpoint's training state is not valid JSON .*\[ERR_WEIGHTS\]/)

  const logDir = join(dir, 'logdir')
  await mkdir(join(logDir, 'train.jsonl'), { recursive: true })
  const log = await cli(...trainArgs(faces, logDir, '--max-steps', '1', '--overwrite'))
  t.is(log.code, 1, log.stderr)
  t.regex(log.stderr, /train\.jsonl: cannot be opened for writing \(EISDIR\) \[ERR_OUTPUT\]/)
  for (const run of [outFile, missing, unreadable, badJson, log]) noStack(t, run)
})

/** Rewrites the `checkpoint` metadata (the training state) of a checkpoint file in place. */
async function rewriteState(file: string, edit: (state: string) => string, meta: (m: Record<string, string>) => void = () => {}): Promise<void> {
  const bytes = await readFile(file)
  const length = Number(bytes.readBigUInt64LE(0))
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'))
  header.__metadata__.checkpoint = edit(header.__metadata__.checkpoint)
  meta(header.__metadata__)
  let text = JSON.stringify(header)
  while (text.length % 8 !== 0) text += ' '
  const head = Buffer.alloc(8)
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(text)))
  await writeFile(file, Buffer.concat([head, Buffer.from(text), bytes.subarray(8 + length)]))
}

// ── 8. logs and retention ────────────────────────────────────────────────────────────

test.serial('8: after a SIGKILL (and a torn last line), --resume cuts train.jsonl back to the checkpoint: every step once', async (t) => {
  const out = join(dir, 'killed')
  const first = start(trainArgs(faces, out, '--epochs', '100000', '--checkpoint-every', '2'))
  await untilSteps(out, 7, first.child)
  first.child.kill('SIGKILL')
  await first.done
  await appendFile(join(out, 'train.jsonl'), '{"type":"step","step":99999,"epo')
  const logged = await stepsOf(out)
  const newest = stepOfName((await checkpoints(out)).at(-1)!)
  t.log(`killed with ${logged.length} steps logged, newest checkpoint at step ${newest}`)
  const resumed = await cli(...trainArgs(faces, out, '--epochs', '100000', '--resume', '--checkpoint-every', '2', '--max-steps', String(newest + 4)))
  t.is(resumed.code, 0, resumed.stderr)
  t.deepEqual(await stepsOf(out), range(1, newest + 4))
  const epochs = (await logRows(out)).filter((r) => r.type === 'epoch').map((r) => r.epoch)
  t.deepEqual(epochs, range(0, epochs.length - 1), 'each epoch line once')
})

test('8: checkpoint metadata with impossible values (negative step, a step not its name, a batch past the epoch) is a WeightsError, the model untouched', async (t) => {
  const ckptDir = join(dir, 'impossible')
  const model = await createModel()
  try {
    await new Trainer(model, trainerOptions(ckptDir)).fit(makeSource(), { maxSteps: 1, epochs: 5 })
    const original = join(ckptDir, 'step-00000001.ckpt')
    const probe = new Uint8Array(64 * 64 * 3).map((_, i) => i % 251)
    const before = await model.embed(probe)
    const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
      ['negative', (s) => (s.step = -3), /has step -3, not a count/],
      ['renamed', (s) => (s.step = 7), /says step 7, its header step 1/],
      ['fractional', (s) => (s.epoch = 0.5), /has epoch 0\.5, not a count/],
      ['beyond', (s) => (s.batch = 40), /is at batch 40, but an epoch of this data has 2 batches/],
    ]
    for (const [name, edit, message] of cases) {
      const file = join(ckptDir, `${name}.ckpt`)
      await copyFile(original, file)
      await rewriteState(file, (text) => {
        const state = JSON.parse(text) as Record<string, unknown>
        edit(state)
        return JSON.stringify(state)
      })
      await t.throwsAsync(new Trainer(model, trainerOptions()).fit(makeSource(), { resume: file, maxSteps: 3 }), { instanceOf: WeightsError, message }, name)
    }
    // Named for one step, holding another: retention would keep and delete the wrong files.
    await copyFile(original, join(ckptDir, 'step-00000009.ckpt'))
    await t.throwsAsync(new Trainer(model, trainerOptions()).fit(makeSource(), { resume: join(ckptDir, 'step-00000009.ckpt'), maxSteps: 3 }), {
      instanceOf: WeightsError,
      message: /says step 1, but the file is named for step 9/,
    })
    t.deepEqual(await model.embed(probe), before, 'a refused checkpoint leaves the weights as they were')
  } finally {
    model.dispose()
  }
})

test('8: with checkpointEvery, each step is checkpointed at most once, at an epoch end and at a mid-epoch stop alike', async (t) => {
  for (const [name, every, fit] of [
    ['epoch-end', 2, { epochs: 2 }],
    ['mid-epoch', 3, { epochs: 5, maxSteps: 3 }],
  ] as const) {
    const ckptDir = join(dir, `once-${name}`)
    await mkdir(ckptDir, { recursive: true })
    const writes: string[] = []
    const watcher = watch(ckptDir, (_, file) => {
      if (file?.includes('.tmp-') && !writes.includes(file)) writes.push(file)
    })
    const model = await createModel()
    try {
      const result = await new Trainer(model, { ...trainerOptions(ckptDir), checkpointEvery: every }).fit(makeSource(), fit)
      await new Promise((r) => setTimeout(r, 200)) // let inotify deliver the last events
      const perStep = writes.map((w) => /^\.step-(\d+)\.ckpt/.exec(w)![1])
      t.deepEqual(perStep, [...new Set(perStep)], `${name}: ${writes.join(', ')}`)
      t.is(perStep.at(-1), String(result.steps).padStart(8, '0'))
    } finally {
      watcher.close()
      model.dispose()
    }
  }
})

test.serial('8: --overwrite removes exactly the previous run (checkpoints, log, model, config) and keeps the user\'s own files; a log-only folder counts as a run', async (t) => {
  const out = join(dir, 'overwrite')
  t.is((await cli(...trainArgs(faces, out, '--max-steps', '6', '--checkpoint-every', '1', '--keep-checkpoints', '4'))).code, 0)
  await writeFile(join(out, 'notes.txt'), 'mine')
  await writeFile(join(out, 'checkpoints', 'README'), 'mine too')
  await mkdir(join(out, 'report'))
  const run = await cli(...trainArgs(faces, out, '--max-steps', '2', '--overwrite'))
  t.is(run.code, 0, run.stderr)
  t.deepEqual(await checkpoints(out), ['step-00000002.ckpt'])
  t.deepEqual(await stepsOf(out), [1, 2])
  t.deepEqual((await readdir(out)).sort(), ['checkpoints', 'config.json', 'model.safetensors', 'notes.txt', 'report', 'train.jsonl'])
  t.deepEqual((await readdir(join(out, 'checkpoints'))).sort(), ['README', 'step-00000002.ckpt'])
  // A run killed before its first checkpoint leaves only a log: appending a new run to it would mix them.
  const logOnly = join(dir, 'log-only')
  await mkdir(logOnly)
  await writeFile(join(logOnly, 'train.jsonl'), '{"type":"step","step":1}\n')
  const refused = await cli(...trainArgs(faces, logOnly, '--max-steps', '1'))
  t.is(refused.code, 2)
  t.regex(refused.stderr, /already holds a run; pass --resume to continue it or --overwrite/)
})

// ── 9. messages name the flag ───────────────────────────────────────────────────────

test.serial('9: --batch-images 1, --lr 1e308 and one identity per batch without negatives are usage errors naming the flag; resuming at an epoch boundary prints no empty epoch', async (t) => {
  const out = join(dir, 'flags')
  const cases: [string[], RegExp][] = [
    [['--batch-images', '1'], /--batch-images: must be an integer ≥ 2 \(an anchor and a positive\), got 1/],
    [['--lr', '1e308'], /--lr: must be at most 3\.40e\+38/],
    [['--weight-decay', '1e300'], /--weight-decay: must be at most/],
    [['--batch-identities', '1'], /--batch-identities 1 .*makes batches of one identity/],
  ]
  for (const [flags, message] of cases) {
    const run = await cli(...trainArgs(faces, out, '--max-steps', '1', '--overwrite', ...flags))
    t.is(run.code, 2, `${flags.join(' ')}: ${run.stderr}`)
    t.regex(run.stderr, message)
    t.notRegex(run.stderr, /\bK must|identitiesPerBatch|Internal torch error/)
  }
  // 3 batches an epoch: max-steps 3 stops exactly at the first epoch's end.
  const boundary = join(dir, 'boundary')
  const first = await cli(...trainArgs(faces, boundary, '--epochs', '2', '--max-steps', '3'))
  t.is(first.code, 0, first.stderr)
  const resumed = await cli(...trainArgs(faces, boundary, '--epochs', '2', '--resume'))
  t.is(resumed.code, 0, resumed.stderr)
  t.notRegex(resumed.stderr, /0 steps, mean loss/)
  const epochs = (await logRows(boundary)).filter((r) => r.type === 'epoch')
  t.deepEqual(epochs.map((e) => [e.epoch, e.steps]), [[0, 3], [1, 3]])
})

// ── 10. .npy over 2 GiB ───────────────────────────────────────────────────────────────

test('10: an .npy over 2 GiB (sparse) is judged by its header, never read whole (no ERR_FS_FILE_TOO_LARGE); a FIFO named .npy is refused unread', async (t) => {
  const big = join(dir, 'big.npy')
  await writeFile(big, '')
  await truncate(big, 2 ** 31 + 4096)
  const names = join(ROOT, '__test__', 'fixtures', 'npy', 'names.npy')
  const error = await t.throwsAsync(NpyDataset.open({ images: big, names }), { instanceOf: DataError })
  t.is(error!.file, big)
  // All zeros: the header is read, not the 2 GiB (packed.spec opens a 40 GB one).
  t.regex(error!.message, /is not an \.npy file \(bad magic bytes\)/)
  const fifo = join(dir, 'pipe.npy')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  await t.throwsAsync(NpyDataset.open({ images: fifo, names }), { instanceOf: DataError, message: /pipe\.npy: is not a regular file/ })
})
