import test from 'ava'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PNG } from 'pngjs'
import { evaluateVerification, writeReport } from '../src/index'
import { distanceHistogram, rocSpec } from '../src/report/plots'
import { rng } from './helpers'

function scores(seed: number, gap: number): { distances: number[]; same: boolean[] } {
  const rand = rng(seed)
  const g = (): number => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
  const distances: number[] = []
  const same: boolean[] = []
  for (let i = 0; i < 6000; i++) {
    const s = i % 600 < 300
    distances.push(Math.max(0, Math.min(4, (s ? 1.2 - gap / 2 : 1.2 + gap / 2) + 0.3 * g())))
    same.push(s)
  }
  return { distances, same }
}

/** Share of pixels that are neither white nor near-white: something was drawn. */
function inkFraction(png: PNG): number {
  let ink = 0
  for (let i = 0; i < png.data.length; i += 4) if (png.data[i]! < 200 || png.data[i + 1]! < 200 || png.data[i + 2]! < 200) ink++
  return ink / (png.width * png.height)
}

test('writeReport writes report.json, decodable PNGs of the expected size and an index.html', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-report-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const trained = evaluateVerification(scores(1, 1.0))
  const untrained = evaluateVerification(scores(2, 0.2))
  const trainingLog = Array.from({ length: 300 }, (_, step) => ({ step, loss: 0.2 * Math.exp(-step / 80) + 0.02 * Math.sin(step) + 0.03 }))
  const files = await writeReport(
    dir,
    { name: 'trained', verification: trained, baselines: [{ name: 'untrained network', verification: untrained }], details: { arch: 'nn1' } },
    { trainingLog, plot: { width: 400, height: 300, scale: 2 } },
  )
  for (const name of ['roc', 'distances', 'loss'] as const) {
    const png = PNG.sync.read(await readFile(files[name]!))
    // 400×300 plot area plus axes, title and legend, at scale 2.
    t.true(png.width >= 800 && png.width <= 1400, `${name}.png width ${png.width}`)
    t.true(png.height >= 600 && png.height <= 1100, `${name}.png height ${png.height}`)
    t.true(inkFraction(png) > 0.01, `${name}.png has content`)
  }
  const json = JSON.parse(await readFile(files.json, 'utf8')) as {
    results: { name: string; verification: { accuracy: { mean: number }; auc: number; roc: { fpr: number[] } } }
    baselines: { name: string; verification: { auc: number } }[]
  }
  t.is(json.results.name, 'trained')
  t.is(json.results.verification.accuracy.mean, trained.accuracy.mean)
  t.is(json.results.verification.roc.fpr.length, trained.roc.fpr.length)
  t.is(json.baselines[0]!.name, 'untrained network')
  t.is(json.baselines[0]!.verification.auc, untrained.auc)
  const html = await readFile(files.html, 'utf8')
  for (const ref of ['roc.png', 'distances.png', 'loss.png', 'untrained network', (100 * trained.accuracy.mean).toFixed(2)]) {
    t.true(html.includes(ref), `index.html mentions ${ref}`)
  }
})

test('without a training log there is no loss.png', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-report-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const files = await writeReport(dir, { name: 'only', verification: evaluateVerification(scores(3, 0.8)) })
  t.is(files.loss, undefined)
  const png = PNG.sync.read(await readFile(files.roc))
  t.true(png.width > 1000, 'default 520-wide plot at scale 2')
  t.false((await readFile(files.html, 'utf8')).includes('loss.png'))
})

test('distanceHistogram bins every pair once', (t) => {
  const h = distanceHistogram([0, 1, 2, 2, 4], [1, 1, 0, 0, 0], 4)
  t.deepEqual(h.same, [1, 1, 0, 0])
  t.deepEqual(h.different, [0, 0, 2, 1])
  t.is(h.lo, 0)
  t.is(h.hi, 4)
})

test('the ROC plots FAR on a log axis from 1e-4 (rates below drawn at its edge), marks the VAL@FAR target, and keeps the legend below the plot', (t) => {
  const v = evaluateVerification(scores(3, 0.8))
  const spec = rocSpec([{ name: 'trained', roc: v.roc, auc: v.auc }], 1e-3) as { layer: { data: { values: { fpr: number }[] }; mark: { type: string }; encoding: { x: { scale: unknown }; color?: { legend: unknown } } }[] }
  const curve = spec.layer.at(-1)!
  t.deepEqual(curve.encoding.x.scale, { type: 'log', domain: [1e-4, 1], clamp: true })
  t.true(curve.data.values.every((p) => p.fpr >= 1e-4))
  t.deepEqual(curve.encoding.color!.legend, { orient: 'bottom', direction: 'vertical' })
  t.deepEqual(spec.layer.find((l) => l.mark.type === 'rule')!.data.values, [{ fpr: 1e-3 }])
})

test("eval's legend names a model by its path inside the working folder, else by its folder and name, never absolutely", async (t) => {
  const { shortPath } = await import('../src/cli/eval')
  t.is(shortPath('/home/me/proj/runs/demo/model.safetensors', '/home/me/proj'), 'runs/demo/model.safetensors')
  t.is(shortPath('/data/models/demo/model.safetensors', '/home/me/proj'), 'demo/model.safetensors')
})
