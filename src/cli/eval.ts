import { stat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { z } from 'zod'
import { LfwPairs } from '../data/lfw-pairs'
import { rawPixelEmbeddings } from '../eval/embeddings'
import { evaluate, loadPairImages } from '../evaluate'
import { evaluateVerification } from '../eval/verification'
import { FaceNetError } from '../errors'
import type { LossPoint } from '../report/plots'
import { writeReport } from '../report/report'
import { centerCropOf, loadModel, META } from './model'
import { counted, EXIT, MODEL_FLAGS, modelSchema, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, type CommandSpec } from './options'
import { lfwRoot } from './train'
import { ALIGNING, aligning, aligns, alignWith } from './use'
import { storedAlignment } from '../inference'
import { readRegularFile } from '../regular-file'
import { ALIGN } from '../tables/align'
import { EVAL } from '../tables/eval'
import { flagsOf, schemaOf, setIn } from './table-flags'

const schema = z.strictObject({
  ...modelSchema,
  ...aligning,
  pairs: z.string().min(1).optional(),
  data: z.string().min(1).optional(),
  lfw: z.boolean().optional(),
  fold: positiveInt.optional(),
  report: z.string().min(1).optional(),
  flip: z.boolean().optional(),
  farTarget: schemaOf(EVAL, ['farTarget']).farTarget as z.ZodOptional<z.ZodNumber>,
  noStore: z.boolean().default(false),
  name: z.string().optional(),
})

export const evalSpec: CommandSpec<typeof schema> = {
  name: 'eval',
  summary: SUMMARIES.eval,
  usage: 'facenet eval [--model M] (--pairs pairs.txt [--data DIR] | --lfw) [--fold K] [--report DIR] [--align]',
  flags: {
    ...MODEL_FLAGS,
    ...ALIGNING,
    pairs: { kind: 'string', value: 'FILE', help: 'pairs file in the LFW format: View 2 ("folds n" header; threshold per fold chosen on the others) or View 1 ("n" header; 10 stratified folds of its pairs)' },
    data: { kind: 'string', value: 'DIR', help: "images root (DIR/Name/Name_0001.jpg); default: the pairs file's folder" },
    lfw: { kind: 'boolean', help: "LFW View 2's pairs.txt: a clone's data/lfw, or $FACENET_LFW (the npm package does not ship LFW)" },
    fold: { kind: 'number', value: 'K', help: 'headline fold (1-based), its threshold chosen on the other folds; e.g. 10 after train --lfw' },
    report: { kind: 'string', value: 'DIR', help: 'write report.json, roc.png, distances.png, loss.png and index.html there' },
    ...flagsOf(EVAL, ['flip', 'farTarget']),
    noStore: { kind: 'boolean', help: "don't write the threshold and center crop into the model file's metadata" },
    name: { kind: 'string', value: 'NAME', help: 'name of the model in the report' },
  },
  schema,
  notes: [
    "The stored threshold is fold K's (chosen on the other folds) with --fold, else the best-accuracy",
    "threshold on all pairs. 'facenet compare', 'identify' and 'cluster' use it.",
  ],
}

/** The loss curve of the run the model came from (its folder's train.jsonl), if any. */
async function trainingLog(modelFile: string): Promise<LossPoint[] | undefined> {
  let text: string
  try {
    text = await readRegularFile(join(dirname(modelFile), 'train.jsonl'), 'utf8')
  } catch {
    return undefined
  }
  const points: LossPoint[] = []
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue
    let row: { type?: string; step?: number; loss?: number }
    try {
      row = JSON.parse(line) as typeof row
    } catch {
      continue // a line torn by a killed run; the curve does without it
    }
    if (row.type === 'step' && typeof row.step === 'number' && typeof row.loss === 'number') points.push({ step: row.step, loss: row.loss })
  }
  return points.length > 0 ? points : undefined
}

export async function evalCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(evalSpec, argv)
  if (parsed.help) return printHelp(evalSpec)
  const o = parsed.options
  if ((o.pairs === undefined) === (o.lfw !== true)) throw new UsageError('give exactly one of --pairs FILE and --lfw')
  const pairsFile = o.lfw ? join(lfwRoot(), 'pairs.txt') : resolve(o.pairs!)
  const lfw = await LfwPairs.parse(pairsFile, o.data ? { root: resolve(o.data) } : {})
  if (o.fold !== undefined && lfw.folds.length === 1) throw new UsageError(`--fold: ${pairsFile} has one fold (View 1 format), which is evaluated by cross-validation over its own pairs; leave out --fold`)
  if (o.fold !== undefined && o.fold > lfw.folds.length) {
    throw new UsageError(`--fold: ${pairsFile} has ${lfw.folds.length} fold(s), got ${o.fold}`)
  }
  const modelFile = o.model === undefined ? undefined : resolve(o.model)
  const reportDir = o.report ? resolve(o.report) : undefined
  if (reportDir && (await stat(reportDir).catch(() => undefined))?.isDirectory() === false) {
    throw new UsageError(`--report: ${reportDir} exists and is not a folder`)
  }
  using model = await loadModel(o)
  const centerCrop = centerCropOf(model, o)
  const started = Date.now()
  const align = aligns(model, o)
  const images = await loadPairImages(lfw, model.inputSize, align ? { align: alignWith(model, o) } : { centerCrop })
  const singleFold = lfw.folds.length === 1
  const pairs = singleFold ? stratifiedFolds(images.pairs[0]!, pairsFile) : images.pairs
  if (singleFold) process.stderr.write(`${pairsFile} has one fold (View 1 format): evaluated as ${pairs.length} stratified folds of its pairs, each threshold chosen on the others\n`)
  if (images.noFace.length > 0) process.stderr.write(`no face found in ${images.noFace.length} image(s), used whole: ${images.noFace.slice(0, 5).join(', ')}${images.noFace.length > 5 ? ', …' : ''}\n`)
  const raw = evaluateVerification(rawPixelEmbeddings(images.images.data, images.images.shape), pairs, setIn(EVAL, o, ['farTarget']))
  const log = modelFile === undefined ? undefined : await trainingLog(modelFile)
  const name = o.name ?? (modelFile === undefined ? `${model.arch} (pretrained)` : `${model.arch} (${shortPath(modelFile)})`)
  const baselines = [{ name: 'raw pixels', verification: raw }]
  const alignMode = align ? (alignWith(model, o).mode ?? storedAlignment(model) ?? ALIGN.mode.default) : undefined
  const details = { model: modelFile ?? `pretrained ${model.arch}`, pairs: pairsFile, ...(alignMode ? { align: alignMode } : { centerCrop }), ...(o.fold ? { fold: o.fold } : {}) }
  const result = await evaluate(model, images.images, pairs, { ...setIn(EVAL, o, ['flip', 'batchSize', 'farTarget']), name, baselines, details })
  const v = result.verification
  const k = o.fold !== undefined ? o.fold - 1 : undefined
  const threshold = k !== undefined ? v.foldThresholds[k]! : v.threshold
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`
  // The results come first: the report and the stored threshold are extras, and a failure
  // in either (a read-only model file, a full disk) must not hide a finished evaluation.
  if (!parsed.json) {
    console.log(`${v.pairCount} pairs in ${v.folds} folds, model ${model.arch}, ${alignMode ? `aligned (${alignMode})` : `center crop ${centerCrop}`}`)
    console.log(`accuracy      ${pct(v.accuracy.mean)} ± ${pct(v.accuracy.std)}  (raw pixels: ${pct(raw.accuracy.mean)})`)
    if (k !== undefined) console.log(`fold ${o.fold}       ${pct(v.accuracy.perFold[k]!)}  (threshold ${threshold.toFixed(4)} chosen on the other folds)`)
    console.log(`VAL@FAR=${v.val.farTarget}  ${pct(v.val.mean)} ± ${pct(v.val.std)}`)
    console.log(`AUC           ${v.auc.toFixed(4)}   EER ${pct(v.eer)}`)
    console.log(`threshold     ${threshold.toFixed(4)} (squared L2)`)
  }
  const failures: string[] = []
  const failed = (what: string, error: unknown) => failures.push(`${what}: ${error instanceof FaceNetError ? `${error.message} [${error.code}]` : (error as Error)?.message ?? String(error)}`)
  let reportHtml: string | null = null
  if (reportDir) {
    try {
      const files = await writeReport(
        reportDir,
        { name, verification: v, baselines, details: { arch: model.arch, embeddingDim: model.embeddingDim, flip: o.flip ?? false, ...details } },
        log ? { trainingLog: log } : {},
      )
      reportHtml = files.html
    } catch (error) {
      failed(`the report could not be written to ${reportDir}`, error)
    }
  }
  let stored = false
  // The shipped pretrained model is never rewritten.
  if (!o.noStore && modelFile !== undefined) {
    try {
      await model.save(modelFile, {
        metadata: {
          ...model.metadata,
          [META.threshold]: String(threshold),
          [META.thresholdMetric]: v.metric,
          [META.thresholdFrom]: k !== undefined ? `${pairsFile} folds ≠ ${o.fold}` : pairsFile,
          [META.centerCrop]: String(centerCrop),
        },
      })
      stored = true
    } catch (error) {
      failed(`the threshold could not be stored in ${modelFile} (the results above stand; --no-store skips this)`, error)
    }
  }
  if (parsed.json) {
    const summary = {
      model: modelFile ?? `pretrained ${model.arch}`,
      pairs: v.pairCount,
      folds: v.folds,
      accuracy: { mean: v.accuracy.mean, std: v.accuracy.std, perFold: v.accuracy.perFold },
      ...(k !== undefined ? { fold: { fold: o.fold, accuracy: v.accuracy.perFold[k]!, threshold } } : {}),
      val: { mean: v.val.mean, std: v.val.std, farTarget: v.val.farTarget },
      auc: v.auc,
      eer: v.eer,
      threshold,
      thresholdStored: stored,
      rawPixelAccuracy: raw.accuracy.mean,
      ...(alignMode ? { align: alignMode, noFace: images.noFace } : { centerCrop }),
      seconds: (Date.now() - started) / 1000,
      report: reportHtml,
      ...(failures.length > 0 ? { errors: failures } : {}),
    }
    console.log(JSON.stringify(summary))
  } else {
    if (stored) console.log(`threshold stored in ${modelFile}`)
    if (reportHtml) console.log(`report: ${reportHtml}`)
  }
  for (const line of failures) process.stderr.write(`facenet eval: ${line}\n`)
  return failures.length > 0 ? EXIT.failure : EXIT.ok
}

/** A pair of image rows, as `loadPairImages` gives them. */
interface RowPair {
  a: number
  b: number
  same: boolean
}

/**
 * The folds a one-fold (View 1) pairs file is cross-validated on: up to 10, fold f holding
 * every 10th matched and every 10th mismatched pair from the f-th on, so each fold has both
 * kinds (View 1 lists all matched pairs first, so contiguous folds would not).
 */
export function stratifiedFolds(pairs: readonly RowPair[], file: string, most = 10): RowPair[][] {
  const matched = pairs.filter((p) => p.same)
  const mismatched = pairs.filter((p) => !p.same)
  const k = Math.min(most, matched.length, mismatched.length)
  if (k < 2) {
    throw new UsageError(
      `${file} has one fold with ${counted(matched.length, 'matched pair')} and ${counted(mismatched.length, 'mismatched pair')}; ` +
        'choosing a threshold on some pairs and testing it on others needs at least 2 of each',
    )
  }
  return Array.from({ length: k }, (_, f) => [...matched.filter((_, i) => i % k === f), ...mismatched.filter((_, i) => i % k === f)])
}

/**
 * A model file as a plot legend names it: relative to the working folder when inside it
 * (`runs/demo/model.safetensors`), else its folder and name; never the absolute path, and
 * not the bare `model.safetensors` that every run folder holds.
 */
export function shortPath(file: string, cwd = process.cwd()): string {
  const rel = relative(cwd, file)
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : join(basename(dirname(file)), basename(file))
}
