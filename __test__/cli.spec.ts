/**
 * The `facenet` command line, driven as a real subprocess (node + tsx on src/cli/index.ts)
 * on tiny models and a few LFW images.
 */
import test from 'ava'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { FaceNet } from '../src'
import { parseNpy } from '../src/data/npy'
import { copyLfwPhotos, startCli, type CliRun } from './helpers'

const ROOT = resolve(__dirname, '..')
const IDENTITIES = ['Colin_Powell', 'George_W_Bush', 'Gerhard_Schroeder', 'Jean_Chretien', 'Tony_Blair']
const PER_IDENTITY = 6

type Run = CliRun
const start = startCli

const cli = (...args: string[]): Promise<Run> => start(args).done

let dir = ''
let data = ''
let pairs = ''
const images: string[] = []
const CPU = ['--device', 'cpu', '--threads', '1']
const TRAIN = ['--data', '', '--arch', 'tiny', '--batch-identities', '3', '--batch-images', '4', '--negatives', '0', ...CPU]
const trainArgs = () => TRAIN.map((a, i) => (i === 1 ? data : a))

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'facenet-cli-'))
  data = join(dir, 'faces')
  const numbers: Record<string, number[]> = {}
  const copied = await copyLfwPhotos(data, IDENTITIES, PER_IDENTITY)
  for (const id of IDENTITIES) {
    const files = copied[id]!
    numbers[id] = files.map((f) => Number(/_(\d+)\.jpg$/.exec(f)![1]))
    images.push(...files.map((f) => join(data, id, f)))
  }
  // Two folds of 4 matched and 4 mismatched pairs, in the LFW View 2 format.
  const lines = ['2 4']
  for (let fold = 0; fold < 2; fold++) {
    for (let j = 0; j < 4; j++) {
      const id = IDENTITIES[(fold * 4 + j) % 5]!
      lines.push(`${id}\t${numbers[id]![j % 3]}\t${numbers[id]![3 + (j % 3)]}`)
    }
    for (let j = 0; j < 4; j++) {
      const a = IDENTITIES[(fold + j) % 5]!
      const b = IDENTITIES[(fold + j + 1) % 5]!
      lines.push(`${a}\t${numbers[a]![j]}\t${b}\t${numbers[b]![j]}`)
    }
  }
  pairs = join(data, 'pairs.txt')
  await writeFile(pairs, lines.join('\n') + '\n')
})

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

test.serial('--help works for every command; no command, an unknown command and an unknown flag exit 2', async (t) => {
  const top = await cli('--help')
  t.is(top.code, 0)
  const commands = ['train', 'eval', 'embed', 'compare', 'identify', 'cluster', 'info', 'convert']
  const helps = await Promise.all(commands.map((command) => cli(command, '--help')))
  commands.forEach((command, i) => {
    t.true(top.stdout.includes(command), command)
    const help = helps[i]!
    t.is(help.code, 0, command)
    t.true(help.stdout.startsWith(`facenet ${command}:`), help.stdout)
    t.true(help.stdout.includes('usage: facenet'), command)
  })
  t.true(top.stdout.includes('130'))
  t.is((await cli()).code, 2)
  const unknown = await cli('frobnicate')
  t.is(unknown.code, 2)
  t.regex(unknown.stderr, /unknown command "frobnicate"/)
  const flag = await cli('train', '--lfw', '--out', join(dir, 'x'), '--bogus-flag')
  t.is(flag.code, 2)
  t.regex(flag.stderr, /--bogus-flag/)
})

test.serial('bad values and bad config keys exit 2 with messages naming the flag or the key', async (t) => {
  const out = join(dir, 'bad')
  const value = await cli('train', '--lfw', '--out', out, '--lr', 'fast')
  t.is(value.code, 2)
  t.regex(value.stderr, /--lr: expected number, got "fast"/)
  const arch = await cli('train', '--lfw', '--out', out, '--arch', 'resnet')
  t.is(arch.code, 2)
  t.regex(arch.stderr, /--arch: expected one of/)
  const rotation = await cli('train', '--lfw', '--out', out, '--rotation', '90')
  t.is(rotation.code, 2)
  t.regex(rotation.stderr, /--rotation: .*45/)
  const config = join(dir, 'bad.json')
  await writeFile(config, JSON.stringify({ batchImages: 'four', learningRate: 0.1 }))
  const bad = await cli('train', '--lfw', '--out', out, '--config', config)
  t.is(bad.code, 2)
  t.regex(bad.stderr, /config key 'batchImages' in .*bad\.json: expected number, got "four"/)
  t.regex(bad.stderr, /config key 'learningRate' in .*bad\.json is not an option of 'facenet train'/)
  await writeFile(config, '{ not json')
  const broken = await cli('eval', '--config', config)
  t.is(broken.code, 2)
  t.regex(broken.stderr, /--config: .*bad\.json is not valid JSON/)
  const both = await cli('train', '--lfw', '--data', data, '--out', out)
  t.is(both.code, 2)
  t.regex(both.stderr, /exactly one of --data DIR and --lfw/)
  const one = await cli('compare', images[0]!)
  t.is(one.code, 2)
  t.regex(one.stderr, /takes 2 images, got 1/)
  const weights = await cli('compare', images[0]!, images[1]!, '--model', join(dir, 'absent.safetensors'))
  t.is(weights.code, 1)
  t.regex(weights.stderr, /absent\.safetensors.*ERR_WEIGHTS/)
})

test.serial('--lfw where no LFW is (an installed package) is a usage error naming FACENET_LFW and the --data/--pairs way, for train and eval', async (t) => {
  const env = { FACENET_LFW: join(dir, 'no-lfw-here') }
  for (const args of [['train', '--lfw', '--out', join(dir, 'lfw-less')], ['eval', '--lfw', '--model', join(dir, 'absent.safetensors')]]) {
    const run = await start(args, env).done
    t.is(run.code, 2, args[0])
    t.regex(run.stderr, /--lfw needs LFW's images and View 2 pairs\.txt, which the npm package does not ship/)
    t.regex(run.stderr, /FACENET_LFW=.*no-lfw-here has no pairs\.txt/)
    t.regex(run.stderr, /train --data DIR, eval --pairs pairs\.txt --data DIR/)
  }
})

test.serial('eval takes a View 1 (one-fold) pairs file as 2+ stratified folds and says so; too few pairs of a kind, or --fold, are refused with the reason', async (t) => {
  const numbered = (path: string) => /([^/]+)_(\d+)\.jpg$/.exec(path)!
  const [a0, a1, a2, a3] = images.slice(0, 4).map(numbered)
  const [b0, b1] = images.slice(PER_IDENTITY, PER_IDENTITY + 2).map(numbered)
  const person = (m: RegExpExecArray) => m[1]!
  const num = (m: RegExpExecArray) => Number(m[2])
  const view1 = join(dir, 'pairsDevTest.txt')
  await writeFile(
    view1,
    ['4', `${person(a0!)}\t${num(a0!)}\t${num(a1!)}`, `${person(a0!)}\t${num(a2!)}\t${num(a3!)}`, `${person(b0!)}\t${num(b0!)}\t${num(b1!)}`, `${person(a0!)}\t${num(a0!)}\t${num(a3!)}`,
      `${person(a0!)}\t${num(a0!)}\t${person(b0!)}\t${num(b0!)}`, `${person(a0!)}\t${num(a1!)}\t${person(b0!)}\t${num(b1!)}`, `${person(a0!)}\t${num(a2!)}\t${person(b0!)}\t${num(b0!)}`, `${person(a0!)}\t${num(a3!)}\t${person(b0!)}\t${num(b1!)}`].join('\n') + '\n',
  )
  const run = await cli('eval', '--pairs', view1, '--data', data, '--no-align', '--json', ...CPU)
  t.is(run.code, 0, run.stderr)
  t.regex(run.stderr, /has one fold \(View 1 format\): evaluated as 4 stratified folds of its pairs/)
  const fold = await cli('eval', '--pairs', view1, '--data', data, '--fold', '1', ...CPU)
  t.is(fold.code, 2)
  t.regex(fold.stderr, /--fold: .* has one fold \(View 1 format\).*leave out --fold/)
  const { stratifiedFolds } = await import('../src/cli/eval')
  const folds = stratifiedFolds([{ a: 0, b: 1, same: true }, { a: 2, b: 3, same: true }, { a: 0, b: 2, same: false }, { a: 1, b: 3, same: false }, { a: 0, b: 3, same: false }], 'f.txt')
  t.is(folds.length, 2)
  t.true(folds.every((f) => f.some((p) => p.same) && f.some((p) => !p.same)))
  t.throws(() => stratifiedFolds([{ a: 0, b: 1, same: true }, { a: 0, b: 2, same: false }], 'f.txt'), { message: /f\.txt has one fold with 1 matched pair and 1 mismatched pair; .*at least 2 of each/ })
})

test.serial('train → eval → compare / embed / identify / cluster on one tiny run; flags win over --config', async (t) => {
  const out = join(dir, 'run')
  const config = join(dir, 'train.json')
  await writeFile(config, JSON.stringify({ epochs: 1, centerCrop: 0.5, seed: 3 }))
  const trained = await cli('train', ...trainArgs(), '--config', config, '--epochs', '2', '--center-crop', '0.7', '--rotation', '10', '--brightness', '0.2', '--crop-scale', '0.8', '--out', out, '--json')
  t.is(trained.code, 0, trained.stderr)
  const summary = JSON.parse(trained.stdout) as { stopped: string; steps: number; model: string; checkpoint: string }
  // Semi-hard mining ran without libtorch's "index_reduce() is in beta" warning (issue 27).
  t.notRegex(trained.stderr, /index_reduce|in beta/)
  t.is(summary.stopped, 'completed')
  const saved = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>
  t.like(saved, { epochs: 2, centerCrop: 0.7, seed: 3, arch: 'tiny', data, maxRotation: 10, brightness: 0.2, cropScale: 0.8 })
  t.true((await readdir(join(out, 'checkpoints'))).some((f) => f.endsWith('.ckpt')))
  const log = (await readFile(join(out, 'train.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { type: string })
  t.is(log.filter((l) => l.type === 'epoch').length, 2, '--epochs 2 won over the config file')
  t.is(log.filter((l) => l.type === 'step').length, summary.steps)
  // The preprocessing goes with the model, so eval and embed see the training crop.
  const modelFile = join(out, 'model.safetensors')
  {
    using model = await FaceNet.load(modelFile, { device: 'cpu', threads: 1 })
    t.is(model.metadata.centerCrop, '0.7')
  }
  const again = await cli('train', ...trainArgs(), '--out', out)
  t.is(again.code, 2)
  t.regex(again.stderr, /already holds a run; pass --resume .* or --overwrite/)

  const report = join(dir, 'report')
  const evaluated = await cli('eval', '--model', modelFile, '--pairs', pairs, '--fold', '2', '--report', report, ...CPU, '--json')
  t.is(evaluated.code, 0, evaluated.stderr)
  const ev = JSON.parse(evaluated.stdout) as {
    accuracy: { mean: number; std: number; perFold: number[] }
    fold: { accuracy: number; threshold: number }
    val: { mean: number; farTarget: number }
    auc: number
    threshold: number
    centerCrop: number
    report: string
  }
  t.is(ev.accuracy.perFold.length, 2)
  t.is(ev.fold.accuracy, ev.accuracy.perFold[1]!)
  t.is(ev.val.farTarget, 1e-3)
  t.true(ev.auc >= 0 && ev.auc <= 1)
  t.is(ev.centerCrop, 0.7)
  t.true((await stat(ev.report)).size > 0)
  t.true((await stat(join(report, 'loss.png'))).size > 0, 'the run log next to the model gives a loss curve')
  {
    using model = await FaceNet.load(modelFile, { device: 'cpu', threads: 1 })
    t.is(Number(model.metadata.threshold), ev.threshold)
    t.is(model.metadata.centerCrop, '0.7')
  }
  const human = await cli('eval', '--model', modelFile, '--pairs', pairs, ...CPU, '--no-store')
  t.is(human.code, 0)
  t.regex(human.stdout, /accuracy +\d+\.\d+% ± \d+\.\d+%/)
  t.regex(human.stdout, /VAL@FAR=0\.001/)
  t.regex(human.stdout, /AUC/)

  const compared = await cli('compare', images[0]!, images[7]!, '--model', modelFile, ...CPU, '--json')
  t.is(compared.code, 0, compared.stderr)
  const cmp = JSON.parse(compared.stdout) as { distance: number; threshold: number; same: boolean }
  t.is(cmp.threshold, ev.threshold)
  t.is(cmp.same, cmp.distance < cmp.threshold)
  t.true(cmp.distance >= 0 && cmp.distance <= 4)
  const self = await cli('compare', images[0]!, images[0]!, '--model', modelFile, '--threshold', '0.5', ...CPU)
  t.regex(self.stdout, /distance 0\.0000 \(threshold 0\.5000\): same person/)

  const npy = join(dir, 'emb.npy')
  const embedded = await cli('embed', '--model', modelFile, join(data, IDENTITIES[0]!), images[6]!, '--out', npy, ...CPU)
  t.is(embedded.code, 0, embedded.stderr)
  const array = parseNpy(await readFile(npy))
  t.deepEqual(array.shape, [PER_IDENTITY + 1, 128])
  t.is(array.descr, '<f4')
  const rows = new Float32Array(array.data.buffer.slice(array.data.byteOffset, array.data.byteOffset + array.data.byteLength))
  const norm = rows.subarray(0, 128).reduce((s, v) => s + v * v, 0)
  t.true(Math.abs(norm - 1) < 1e-4)
  const json = join(dir, 'emb.json')
  t.is((await cli('embed', '--model', modelFile, images[6]!, '--out', json, ...CPU)).code, 0)
  const doc = JSON.parse(await readFile(json, 'utf8')) as { paths: string[]; dim: number; embeddings: number[][] }
  t.deepEqual(doc.paths, [images[6]])
  // The same image embeds the same through both outputs.
  t.true(doc.embeddings[0]!.every((v, i) => Math.abs(v - rows[PER_IDENTITY * 128 + i]!) < 1e-6))
  t.is((await cli('embed', '--model', modelFile, images[0]!, '--out', join(dir, 'e.csv'))).code, 2)

  const identified = await cli('identify', '--gallery', data, '--probe', images[0]!, '--probe', images[13]!, '--model', modelFile, '--top', '3', '--threshold', '4', ...CPU, '--json')
  t.is(identified.code, 0, identified.stderr)
  const id = JSON.parse(identified.stdout) as { results: { probe: string; match: string | null; candidates: { identity: string; distance: number }[] }[] }
  t.is(id.results.length, 2)
  // A probe taken from the gallery is its own nearest neighbour, at distance 0.
  t.is(id.results[0]!.match, IDENTITIES[0]!)
  t.true(id.results[0]!.candidates[0]!.distance < 1e-6)
  t.is(id.results[1]!.match, IDENTITIES[2]!)
  t.is(id.results[0]!.candidates.length, 3)
  const ds = id.results[0]!.candidates.map((c) => c.distance)
  t.deepEqual(ds, [...ds].sort((a, b) => a - b))

  const clustered = await cli('cluster', data, '--model', modelFile, '--threshold', '0.5', ...CPU, '--json')
  t.is(clustered.code, 0, clustered.stderr)
  const cl = JSON.parse(clustered.stdout) as { clusters: string[][]; scores: { identities: number; purity: number } }
  t.deepEqual(cl.clusters.flat().sort(), [...images].sort())
  t.is(cl.scores.identities, IDENTITIES.length)
  t.true(cl.scores.purity > 0 && cl.scores.purity <= 1)
})

test.serial('info prints the library and libtorch versions and the devices', async (t) => {
  const info = await cli('info', '--json')
  t.is(info.code, 0)
  const doc = JSON.parse(info.stdout) as { version: string; libtorch: string; devices: { cpu: boolean; cudaAvailable: boolean } }
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  t.is(doc.version, pkg.version)
  t.regex(doc.libtorch, /^2\.11/)
  t.true(doc.devices.cpu)
  t.is(typeof doc.devices.cudaAvailable, 'boolean')
  const human = await cli('info')
  t.regex(human.stdout, /libtorch +2\.11/)
})

test.serial('Ctrl-C during training writes a checkpoint and exits 130; --resume continues from its step', async (t) => {
  const out = join(dir, 'interrupted')
  const log = join(out, 'train.jsonl')
  const steps = async () => {
    try {
      return (await readFile(log, 'utf8')).split('\n').filter((l) => l.startsWith('{"type":"step"')).map((l) => (JSON.parse(l) as { step: number }).step)
    } catch {
      return []
    }
  }
  const run = start(['train', ...trainArgs(), '--epochs', '1000', '--out', out])
  while ((await steps()).length < 2) {
    const exited = await Promise.race([run.done, new Promise((r) => setTimeout(r, 100, undefined))])
    if (exited) return t.fail(`training exited early: ${JSON.stringify(exited)}`)
  }
  run.child.kill('SIGINT')
  const stopped = await run.done
  t.is(stopped.code, 130, stopped.stderr)
  t.regex(stopped.stdout, /interrupted \(aborted\) at step \d+/)
  const done = await steps()
  const last = done.at(-1)!
  const checkpoint = join(out, 'checkpoints', `step-${String(last).padStart(8, '0')}.ckpt`)
  t.true((await stat(checkpoint)).size > 0, 'the abort wrote a checkpoint at the last completed step')
  t.true((await stat(join(out, 'model.safetensors'))).size > 0)

  // The recipe comes back from the run's config.json; only the budget is given.
  const resumed = await cli('train', '--out', out, '--resume', '--max-steps', String(last + 2), ...CPU, '--json')
  t.is(resumed.code, 0, resumed.stderr)
  const summary = JSON.parse(resumed.stdout) as { stopped: string; steps: number }
  t.is(summary.stopped, 'max-steps')
  t.is(summary.steps, last + 2)
  t.deepEqual((await steps()).slice(done.length), [last + 1, last + 2])
  t.regex(resumed.stderr, new RegExp(`resuming from .*step-${String(last).padStart(8, '0')}\\.ckpt`))

  const explicit = await cli('train', '--out', out, '--resume', checkpoint, '--max-steps', String(last + 1), ...CPU, '--json')
  t.is(explicit.code, 0, explicit.stderr)
  t.is((JSON.parse(explicit.stdout) as { steps: number }).steps, last + 1)
  const none = await cli('train', ...trainArgs(), '--out', join(dir, 'empty'), '--resume')
  t.is(none.code, 2)
  t.regex(none.stderr, /--resume: no checkpoint in/)
})

test.serial("train --tiny-widths --input-size shape tiny, are kept in config.json for --resume, and go with the model", async (t) => {
  const out = join(dir, 'shaped')
  const trained = await cli('train', ...trainArgs(), '--tiny-widths', '8,16,24', '--input-size', '48', '--max-steps', '1', '--out', out, '--json')
  t.is(trained.code, 0, trained.stderr)
  const saved = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, unknown>
  t.like(saved, { tinyWidths: [8, 16, 24], inputSize: 48 })
  const resumed = await cli('train', '--out', out, '--resume', '--max-steps', '2', '--json', ...CPU)
  t.is(resumed.code, 0, resumed.stderr)
  using model = await FaceNet.load(join(out, 'model.safetensors'), { device: 'cpu', threads: 1 })
  t.deepEqual(model.info.tinyWidths, [8, 16, 24])
  t.deepEqual(model.inputSize, { height: 48, width: 48 })
  const refused = await cli('train', '--lfw', '--arch', 'nn4', '--tiny-widths', '8,16', '--out', join(dir, 'refused'))
  t.is(refused.code, 2)
  t.regex(refused.stderr, /--tiny-widths and --input-size shape --arch tiny, not 'nn4'/)
  const bad = await cli('train', ...trainArgs(), '--tiny-widths', '8', '--out', join(dir, 'bad'))
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--tiny-widths: expected 2 or more channel counts such as 32,64,128,256/)
})
