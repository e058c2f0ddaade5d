import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { InvalidArgumentError } from '../errors'
import type { ClusteringResult } from '../eval/clustering'
import type { IdentificationResult } from '../eval/identification'
import type { VerificationResult } from '../eval/verification'
import { distancesSpec, lossSpec, renderVegaLite, rocSpec, type LossPoint, type PlotOptions } from './plots'

/** One evaluated model (or baseline) in a report. */
export interface ReportRow {
  /** e.g. `'trained nn1'`, `'untrained network'`, `'raw pixels'`. */
  name: string
  verification: VerificationResult
  identification?: IdentificationResult
  clustering?: readonly ClusteringResult[]
}

export interface ReportInput extends ReportRow {
  /** Heading of the HTML page. Default `'FaceNet evaluation'`. */
  title?: string
  /** Free-form facts shown with the numbers, e.g. model info, dataset, date. */
  details?: Record<string, unknown>
  /** Extra rows for context, drawn on the ROC and listed in the tables. */
  baselines?: readonly ReportRow[]
}

export interface ReportOptions {
  /** Loss per step; when given, `loss.png` is drawn. */
  trainingLog?: readonly LossPoint[]
  plot?: PlotOptions
}

export interface ReportFiles {
  json: string
  roc: string
  distances: string
  loss?: string
  html: string
}

function summarizeRow(row: ReportRow, withRoc: boolean): Record<string, unknown> {
  const v = row.verification
  return {
    name: row.name,
    verification: {
      metric: v.metric,
      pairCount: v.pairCount,
      sameCount: v.sameCount,
      differentCount: v.differentCount,
      folds: v.folds,
      accuracy: v.accuracy,
      foldThresholds: v.foldThresholds,
      val: v.val,
      far: v.far,
      auc: v.auc,
      eer: v.eer,
      eerThreshold: v.eerThreshold,
      threshold: v.threshold,
      thresholdAccuracy: v.thresholdAccuracy,
      ...(withRoc ? { roc: { ...v.roc, thresholds: v.roc.thresholds.map((t) => (Number.isFinite(t) ? t : null)) } } : {}),
    },
    ...(row.identification ? { identification: row.identification } : {}),
    ...(row.clustering ? { clustering: row.clustering.map(({ assignments: _a, ...rest }) => rest) } : {}),
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : '–')
const num = (x: number, digits = 4): string => (Number.isFinite(x) ? x.toFixed(digits) : '–')

function html(input: ReportInput, rows: readonly ReportRow[], files: ReportFiles): string {
  const title = input.title ?? 'FaceNet evaluation'
  const v = input.verification
  const verificationRows = rows
    .map((r) => {
      const x = r.verification
      return `<tr><td>${escapeHtml(r.name)}</td><td>${pct(x.accuracy.mean)} ± ${pct(x.accuracy.std)}</td><td>${pct(x.val.mean)} ± ${pct(x.val.std)}</td><td>${num(x.auc)}</td><td>${pct(x.eer)}</td><td>${num(x.threshold)}</td></tr>`
    })
    .join('\n')
  const identRows = rows
    .filter((r) => r.identification)
    .map((r) => {
      const id = r.identification!
      const ks = Object.entries(id.topK)
        .map(([k, a]) => `top-${k} ${pct(a)}`)
        .join(', ')
      return `<tr><td>${escapeHtml(r.name)}</td><td>${ks}</td><td>${id.galleryCount}</td><td>${id.probeCount}</td><td>${id.index}</td></tr>`
    })
    .join('\n')
  const clusterRows = rows
    .flatMap((r) =>
      (r.clustering ?? []).map(
        (c) =>
          `<tr><td>${escapeHtml(r.name)}</td><td>${c.method}</td><td>${num(c.threshold)}</td><td>${c.clusterCount} / ${c.identityCount}</td><td>${num(c.purity)}</td><td>${num(c.nmi)}</td><td>${num(c.pairwiseF)}</td></tr>`,
      ),
    )
    .join('\n')
  const details = Object.entries(input.details ?? {})
    .map(([k, val]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof val === 'string' ? val : JSON.stringify(val))}</td></tr>`)
    .join('\n')
  const metricLabel = v.metric === 'l2' ? 'squared L2' : v.metric === 'cosine' ? '1 − cosine' : 'given distances'
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: left; }
th { background: #f3f3f3; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; }
figure img { width: 520px; max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${details ? `<table>${details}</table>` : ''}
<h2>Verification</h2>
<p>${v.pairCount} pairs (${v.sameCount} same, ${v.differentCount} different), ${v.folds}-fold protocol; distance: ${metricLabel}.
Accuracy: threshold chosen on the other folds. VAL at FAR = ${v.val.farTarget}. Threshold: best accuracy on all pairs.</p>
<table>
<tr><th>Model</th><th>Accuracy</th><th>VAL@FAR=${v.val.farTarget}</th><th>AUC</th><th>EER</th><th>Threshold</th></tr>
${verificationRows}
</table>
${identRows ? `<h2>Identification</h2>\n<table>\n<tr><th>Model</th><th>Accuracy</th><th>Gallery</th><th>Probes</th><th>Index</th></tr>\n${identRows}\n</table>` : ''}
${clusterRows ? `<h2>Clustering</h2>\n<table>\n<tr><th>Model</th><th>Method</th><th>Threshold</th><th>Clusters / identities</th><th>Purity</th><th>NMI</th><th>Pairwise F</th></tr>\n${clusterRows}\n</table>` : ''}
<h2>Plots</h2>
<div class="plots">
<figure><img src="roc.png" alt="ROC curve"><figcaption>ROC of ${escapeHtml(input.name)}${input.baselines?.length ? ' and baselines' : ''}.</figcaption></figure>
<figure><img src="distances.png" alt="Histogram of pair distances"><figcaption>Distances of same and different pairs (${escapeHtml(input.name)}), threshold dashed.</figcaption></figure>
${files.loss ? '<figure><img src="loss.png" alt="Training loss"><figcaption>Training loss per step, with a moving average.</figcaption></figure>' : ''}
</div>
<p><a href="report.json">report.json</a> holds every number above, the per-fold values and the full ROC.</p>
</body>
</html>
`
}

/**
 * Writes an evaluation report into `dir` (created if needed): `report.json`, `roc.png`,
 * `distances.png`, `loss.png` (with a training log) and an `index.html` showing them.
 * Baseline rows (e.g. the untrained network, raw pixels) are drawn and tabled alongside.
 */
export async function writeReport(dir: string, input: ReportInput, options: ReportOptions = {}): Promise<ReportFiles> {
  if (!input || !input.verification || typeof input.name !== 'string') {
    throw new InvalidArgumentError('writeReport needs { name, verification } (and optional baselines)')
  }
  const rows: ReportRow[] = [input, ...(input.baselines ?? [])]
  await mkdir(dir, { recursive: true })
  const files: ReportFiles = {
    json: join(dir, 'report.json'),
    roc: join(dir, 'roc.png'),
    distances: join(dir, 'distances.png'),
    html: join(dir, 'index.html'),
  }
  const v = input.verification
  const metricLabel =
    v.metric === 'l2' ? 'Squared L2 distance' : v.metric === 'cosine' ? 'Cosine distance (1 − cos)' : 'Distance'
  const roc = await renderVegaLite(rocSpec(rows.map((r) => ({ name: r.name, roc: r.verification.roc, auc: r.verification.auc })), rows[0]!.verification.val.farTarget), options.plot)
  await writeFile(files.roc, roc.png)
  const hist = await renderVegaLite(distancesSpec(v.distances, v.same, v.threshold, metricLabel), options.plot)
  await writeFile(files.distances, hist.png)
  if (options.trainingLog && options.trainingLog.length > 0) {
    files.loss = join(dir, 'loss.png')
    await writeFile(files.loss, (await renderVegaLite(lossSpec(options.trainingLog), options.plot)).png)
  }
  const json = {
    title: input.title ?? 'FaceNet evaluation',
    createdAt: new Date().toISOString(),
    details: input.details ?? {},
    results: summarizeRow(input, true),
    baselines: (input.baselines ?? []).map((b) => summarizeRow(b, false)),
    ...(options.trainingLog ? { trainingLog: { steps: options.trainingLog.length, last: options.trainingLog[options.trainingLog.length - 1] } } : {}),
    files: { roc: 'roc.png', distances: 'distances.png', ...(files.loss ? { loss: 'loss.png' } : {}), html: 'index.html' },
  }
  await writeFile(files.json, JSON.stringify(json, null, 2) + '\n')
  await writeFile(files.html, html(input, rows, files))
  return files
}
