import { pathToFileURL } from 'node:url'
import type { Roc } from '../eval/roc'

type VegaModule = typeof import('vega')
// vega-lite's types are reachable only through package exports, which this project's
// module resolution does not read; the one call used here is typed by hand.
interface VegaLiteModule {
  compile(spec: unknown): { spec: import('vega').Spec }
}

// vega and vega-lite ship as ES modules with top-level await, which require() cannot load.
// tsc would turn a plain import() into require() in this CommonJS build, so keep a real one.
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>

let renderer: Promise<{ vega: VegaModule; vl: VegaLiteModule }> | undefined
function loadRenderer(): Promise<{ vega: VegaModule; vl: VegaLiteModule }> {
  renderer ??= Promise.all([
    importEsm(pathToFileURL(require.resolve('vega')).href),
    importEsm(pathToFileURL(require.resolve('vega-lite')).href),
  ]).then(([vega, vl]) => ({ vega: vega as VegaModule, vl: vl as VegaLiteModule }))
  return renderer
}

export interface PlotOptions {
  /** Plot area in CSS pixels (before `scale`). Default 520×400. */
  width?: number
  height?: number
  /** Device pixel ratio of the PNG. Default `2`, sharp on high-density screens. */
  scale?: number
}

const FONT = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif'

/** Compiles a vega-lite spec, renders it headlessly to SVG, then rasterizes it with resvg. */
export async function renderVegaLite(spec: Record<string, unknown>, options: PlotOptions = {}): Promise<{ svg: string; png: Buffer }> {
  const { vega, vl } = await loadRenderer()
  const full = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    width: options.width ?? 520,
    height: options.height ?? 400,
    background: 'white',
    config: {
      font: FONT,
      title: { fontSize: 16 },
      axis: { labelFontSize: 12, titleFontSize: 13 },
      // Headless vega measures text by estimate; no limit keeps long model names whole.
      legend: { labelFontSize: 12, titleFontSize: 12, labelLimit: 0 },
    },
    ...spec,
  }
  const compiled = vl.compile(full).spec
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' })
  const svg = await view.toSVG()
  view.finalize()
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Resvg } = require('@resvg/resvg-js') as typeof import('@resvg/resvg-js')
  const png = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: options.scale ?? 2 },
    // Text needs real fonts: use the system's, with DejaVu (common on Linux) first.
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
  })
    .render()
    .asPng()
  return { svg, png }
}

export interface RocSeries {
  name: string
  roc: Roc
  auc: number
}

/** Keeps the shape of a long ROC while bounding the points handed to the renderer. */
function thin(roc: Roc, maxPoints = 2000): { fpr: number; tpr: number }[] {
  const n = roc.fpr.length
  const step = Math.max(1, Math.ceil(n / maxPoints))
  const out: { fpr: number; tpr: number }[] = []
  for (let i = 0; i < n; i += step) out.push({ fpr: roc.fpr[i]!, tpr: roc.tpr[i]! })
  if ((n - 1) % step !== 0) out.push({ fpr: roc.fpr[n - 1]!, tpr: roc.tpr[n - 1]! })
  return out
}

/** The left end of the ROC's FAR axis: face verification reads the curve at FAR 1e-4 … 1e-2. */
export const ROC_MIN_FAR = 1e-4

/**
 * The ROC on a log false-accept-rate axis from {@link ROC_MIN_FAR} to 1, as face
 * verification plots it (a linear axis hides VAL@FAR=1e-3 in the first pixel), with the
 * VAL@FAR target marked. Rates below the axis' start are drawn at its left edge.
 */
export function rocSpec(series: readonly RocSeries[], farTarget = 1e-3): Record<string, unknown> {
  const label = (s: RocSeries): string => `${s.name} (AUC ${s.auc.toFixed(4)})`
  const values = series.flatMap((s) => thin(s.roc).map((p) => ({ fpr: Math.max(ROC_MIN_FAR, p.fpr), tpr: p.tpr, model: label(s) })))
  // Chance (TAR = FAR) is a curve on a log axis: sampled per tenth of a decade.
  const chance = Array.from({ length: 41 }, (_, i) => 10 ** (Math.log10(ROC_MIN_FAR) * (1 - i / 40))).map((far) => ({ fpr: far, tpr: far }))
  const x = { field: 'fpr', type: 'quantitative', title: 'False accept rate (log)', scale: { type: 'log', domain: [ROC_MIN_FAR, 1], clamp: true } }
  return {
    title: 'ROC, verification pairs',
    layer: [
      {
        data: { values: chance },
        mark: { type: 'line', strokeDash: [4, 4], color: '#999' },
        encoding: { x, y: { field: 'tpr', type: 'quantitative' } },
      },
      {
        data: { values: [{ fpr: farTarget }] },
        mark: { type: 'rule', strokeDash: [2, 3], color: '#666' },
        encoding: { x },
      },
      {
        data: { values },
        mark: { type: 'line', strokeWidth: 2, interpolate: 'step-after' },
        encoding: {
          x,
          y: { field: 'tpr', type: 'quantitative', title: 'True accept rate', scale: { domain: [0, 1] } },
          // The evaluated model first, then the baselines, in the order given; below the
          // plot, where no curve runs under it.
          color: { field: 'model', type: 'nominal', title: null, sort: series.map(label), legend: { orient: 'bottom', direction: 'vertical' } },
          order: { field: 'fpr', type: 'quantitative' },
        },
      },
    ],
  }
}

/** Histogram counts of same-pair and different-pair distances over shared bins. */
export function distanceHistogram(
  distances: ArrayLike<number>,
  same: ArrayLike<number | boolean>,
  bins = 60,
): { lo: number; hi: number; width: number; same: number[]; different: number[] } {
  let lo = Infinity
  let hi = -Infinity
  for (let i = 0; i < distances.length; i++) {
    lo = Math.min(lo, distances[i]!)
    hi = Math.max(hi, distances[i]!)
  }
  if (!(hi > lo)) {
    lo = Number.isFinite(lo) ? lo - 0.5 : 0
    hi = lo + 1
  }
  const width = (hi - lo) / bins
  const sameCounts = new Array<number>(bins).fill(0)
  const diffCounts = new Array<number>(bins).fill(0)
  for (let i = 0; i < distances.length; i++) {
    const b = Math.min(bins - 1, Math.floor((distances[i]! - lo) / width))
    if (same[i]) sameCounts[b]!++
    else diffCounts[b]!++
  }
  return { lo, hi, width, same: sameCounts, different: diffCounts }
}

export function distancesSpec(
  distances: ArrayLike<number>,
  same: ArrayLike<number | boolean>,
  threshold: number,
  metricLabel: string,
): Record<string, unknown> {
  const h = distanceHistogram(distances, same)
  const values: Record<string, unknown>[] = []
  for (let b = 0; b < h.same.length; b++) {
    const x0 = h.lo + b * h.width
    values.push({ x0, x1: x0 + h.width, count: h.same[b], pairs: 'same identity' })
    values.push({ x0, x1: x0 + h.width, count: h.different[b], pairs: 'different identities' })
  }
  return {
    title: 'Pair distances',
    layer: [
      {
        data: { values },
        mark: { type: 'rect', opacity: 0.55 },
        encoding: {
          x: { field: 'x0', type: 'quantitative', title: metricLabel },
          x2: { field: 'x1' },
          y: { field: 'count', type: 'quantitative', title: 'Pairs', stack: null },
          color: {
            field: 'pairs',
            type: 'nominal',
            title: null,
            scale: { domain: ['same identity', 'different identities'], range: ['#2b83ba', '#d7191c'] },
            legend: { orient: 'top', direction: 'horizontal' },
          },
        },
      },
      {
        data: { values: [{ threshold, label: `threshold ${threshold.toFixed(3)}` }] },
        layer: [
          { mark: { type: 'rule', strokeWidth: 2, strokeDash: [6, 3], color: 'black' }, encoding: { x: { field: 'threshold', type: 'quantitative' } } },
          {
            mark: { type: 'text', align: 'left', dx: 4, dy: 8, baseline: 'top', fontSize: 12 },
            encoding: { x: { field: 'threshold', type: 'quantitative' }, y: { value: 0 }, text: { field: 'label' } },
          },
        ],
      },
    ],
  }
}

export interface LossPoint {
  step: number
  loss: number
}

export function lossSpec(log: readonly LossPoint[]): Record<string, unknown> {
  const values = log.filter((p) => Number.isFinite(p.loss)).map((p) => ({ step: p.step, loss: p.loss }))
  // A moving average makes the trend readable through per-batch noise.
  const window = Math.max(1, Math.round(values.length / 50))
  return {
    title: 'Training loss',
    data: { values },
    layer: [
      {
        mark: { type: 'line', opacity: 0.35, color: '#4c78a8' },
        encoding: { x: { field: 'step', type: 'quantitative', title: 'Step' }, y: { field: 'loss', type: 'quantitative', title: 'Loss' } },
      },
      {
        transform: [{ window: [{ op: 'mean', field: 'loss', as: 'smooth' }], frame: [-window, window], sort: [{ field: 'step' }] }],
        mark: { type: 'line', strokeWidth: 2.5, color: '#f58518' },
        encoding: { x: { field: 'step', type: 'quantitative' }, y: { field: 'smooth', type: 'quantitative' } },
      },
    ],
  }
}
