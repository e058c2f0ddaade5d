/**
 * The pretrained `dlib-resnet-v1` on the shipped LFW, end to end: all 6,000 View 2 pairs
 * from the shipped photos as they are (150×150 deep-funnelled), through this library's MTCNN →
 * its dlib chip (`alignFaces(…, { mode: 'dlib' })`) → the imported model; 10-fold accuracy,
 * VAL@FAR=1e-3 and AUC. Beside it, dlib's own pipeline on the same photos (HOG detector,
 * 5-point shape predictor, chip, descriptor, from `bench/dlib_lfw.py` with dlib-bin), scored
 * by the same code, and the mean pixel difference between the two pipelines' chips.
 *
 *   ~/.cache/facenet-torch/torch-2.11.0/bin/python bench/dlib_lfw.py   # once: dlib's side
 *   npx tsx bench/lfw-pretrained.ts [--threads N] [--out FILE.json]
 *
 * In photos with several faces, both pipelines take the face nearest the photo's centre
 * (LFW photos are centred on their person). A photo in which MTCNN finds no face is embedded
 * whole (resized to 150×150) and counted. Each pipeline is scored as it is and with mirror
 * averaging (the mean of a chip's embedding and its mirror's, as `facenet eval --flip`).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { alignFaces, FaceDetector, FaceNet, LfwPairs, evaluateVerification, type DetectedFace, type VerificationResult } from '../src/index'
import { decodeImages } from '../src/data/decode'
import { parseNpy } from '../src/data/npy'

const args = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const at = args.indexOf(name)
  return at >= 0 ? args[at + 1] : undefined
}
const threads = Number(flag('--threads') ?? 2)
const out = flag('--out')
const root = join(__dirname, '..', 'data', 'lfw')
const dlibCache = join(__dirname, '.cache', 'dlib-lfw')

function central(faces: readonly DetectedFace[], width: number, height: number): DetectedFace | undefined {
  const d = (f: DetectedFace): number => ((f.box[0] + f.box[2]) / 2 - width / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - height / 2) ** 2
  return [...faces].sort((a, b) => d(a) - d(b))[0]
}

/** Each 150×150 chip mirrored left to right. */
function mirrored(chips: Uint8Array): Uint8Array {
  const out = new Uint8Array(chips.length)
  for (let row = 0; row < chips.length / 450; row++) {
    for (let x = 0; x < 150; x++) out.set(chips.subarray(row * 450 + (149 - x) * 3, row * 450 + (149 - x) * 3 + 3), row * 450 + x * 3)
  }
  return out
}

/** The mean of each embedding and its mirror's: test-time flip augmentation, as `facenet eval --flip`. */
function flipAveraged(a: Float32Array, b: Float32Array): Float32Array {
  return a.map((v, i) => (v + b[i]!) / 2)
}

function row(name: string, v: VerificationResult): Record<string, string | number> {
  return {
    pipeline: name,
    accuracy: `${(100 * v.accuracy.mean).toFixed(2)}% ± ${(100 * v.accuracy.std).toFixed(2)}`,
    valAtFar1e3: `${(100 * v.val.mean).toFixed(2)}% ± ${(100 * v.val.std).toFixed(2)}`,
    auc: Number(v.auc.toFixed(5)),
  }
}

async function main(): Promise<void> {
  const lfw = await LfwPairs.parse(join(root, 'pairs.txt'))
  const paths = lfw.imagePaths()
  const index = new Map(paths.map((p, i) => [p, i]))
  const pairs = lfw.folds.map((fold) => fold.pairs.map((p) => ({ a: index.get(p.a)!, b: index.get(p.b)!, same: p.same })))
  const started = Date.now()

  // 1. This library: MTCNN → dlib chip → the imported model.
  const detector = await FaceDetector.load({ threads })
  const detections: DetectedFace[][] = []
  for (let at = 0; at < paths.length; at += 64) detections.push(...(await detector.detectFiles(paths.slice(at, at + 64))))
  detector.dispose()
  const detectSeconds = (Date.now() - started) / 1000
  // Every shipped photo is 150×150.
  const chosen = detections.map((faces) => central(faces, 150, 150))
  const noFace = chosen.flatMap((f, i) => (f ? [] : [i]))
  const withFace = chosen.flatMap((f, i) => (f ? [i] : []))
  const aligned = await alignFaces(
    withFace.map((i) => paths[i]!),
    { mode: 'dlib', size: 150, detections: withFace.map((i) => [chosen[i]!]), threads },
  )
  const chips = new Uint8Array(paths.length * 150 * 150 * 3)
  withFace.forEach((image, k) => chips.set(aligned.data.subarray(k * 67500, (k + 1) * 67500), image * 67500))
  if (noFace.length > 0) {
    const whole = await decodeImages(noFace.map((i) => paths[i]!), { height: 150, width: 150 })
    noFace.forEach((image, k) => chips.set(whole.data.subarray(k * 67500, (k + 1) * 67500), image * 67500))
  }
  const alignSeconds = (Date.now() - started) / 1000 - detectSeconds
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads })
  const embedStarted = Date.now()
  const embeddings = await model.embed({ data: chips, shape: [paths.length, 150, 150, 3] })
  const embedSeconds = (Date.now() - embedStarted) / 1000
  const ours = evaluateVerification({ embeddings, dim: 128 }, pairs)
  const oursFlip = evaluateVerification({ embeddings: flipAveraged(embeddings, await model.embed({ data: mirrored(chips), shape: [paths.length, 150, 150, 3] })), dim: 128 }, pairs)
  const rows = [row('facenet-torch: MTCNN → dlib chip → dlib-resnet-v1', ours), row('  the same, + mirror averaging', oursFlip)]
  const report: Record<string, unknown> = {
    photos: paths.length,
    pairs: pairs.flat().length,
    noFace: noFace.map((i) => relative(root, paths[i]!)),
    seconds: { detect: detectSeconds, align: alignSeconds, embed: embedSeconds },
    threads,
    ours: { accuracy: ours.accuracy, val: ours.val, auc: ours.auc, threshold: ours.threshold, foldThresholds: ours.foldThresholds },
    oursFlip: { accuracy: oursFlip.accuracy, val: oursFlip.val, auc: oursFlip.auc },
  }

  // 2. dlib's own pipeline, and its chips through the imported model.
  if (existsSync(join(dlibCache, 'descriptors.npy'))) {
    const files = JSON.parse(readFileSync(join(dlibCache, 'files.json'), 'utf8')) as string[]
    const shapes = JSON.parse(readFileSync(join(dlibCache, 'shapes.json'), 'utf8')) as Record<string, { fallback: boolean }>
    if (files.length !== paths.length || files.some((f, i) => join(root, f) !== paths[i])) throw new Error(`${dlibCache} is of other photos; rerun bench/dlib_lfw.py`)
    const raw = parseNpy(readFileSync(join(dlibCache, 'descriptors.npy')), 'descriptors.npy').data
    const descriptors = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length))
    const dlib = evaluateVerification({ embeddings: descriptors, dim: 128 }, pairs)
    rows.push(row("dlib 20.0.1 (dlib-bin): HOG → 5-point predictor → chip → descriptor", dlib))
    const dlibChips = parseNpy(readFileSync(join(dlibCache, 'chips.npy')), 'chips.npy').data
    const onDlibChips = await model.embed({ data: dlibChips, shape: [paths.length, 150, 150, 3] })
    // dlib's chips and their mirrors through the imported model (within 1e-6 of dlib's own
    // descriptors, checked below): dlib's pipeline with the same mirror averaging.
    const dlibFlip = evaluateVerification({ embeddings: flipAveraged(descriptors, await model.embed({ data: mirrored(dlibChips), shape: [paths.length, 150, 150, 3] })), dim: 128 }, pairs)
    rows.push(row('  the same, + mirror averaging (mirrors through the imported model)', dlibFlip))
    let maxDiff = 0
    for (let i = 0; i < onDlibChips.length; i++) maxDiff = Math.max(maxDiff, Math.abs(onDlibChips[i]! - descriptors[i]!))
    // Chip difference over the photos where both found the face themselves.
    const both = withFace.filter((i) => !shapes[files[i]!]!.fallback)
    let sum = 0
    for (const i of both) for (let p = i * 67500; p < (i + 1) * 67500; p++) sum += Math.abs(chips[p]! - dlibChips[p]!)
    report.dlibFlip = { accuracy: dlibFlip.accuracy, val: dlibFlip.val, auc: dlibFlip.auc }
    report.dlib = { accuracy: dlib.accuracy, val: dlib.val, auc: dlib.auc, noDetection: files.filter((f) => shapes[f]!.fallback).length }
    report.oursOnDlibChipsMaxAbsDiff = maxDiff
    report.chipMeanAbsPixelDiff = { photos: both.length, value: sum / (both.length * 67500) }
  }
  console.table(rows)
  console.log(JSON.stringify(report, null, 1))
  if (out) writeFileSync(out, JSON.stringify({ rows, ...report }, null, 1))
}

void main()
