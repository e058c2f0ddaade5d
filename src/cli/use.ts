/** The commands that use a trained model: embed, compare, identify, cluster; and info. */
import { mkdir, stat } from 'node:fs/promises'
import { extname, relative, resolve, sep } from 'node:path'
import { z } from 'zod'
import { CLUSTERING_METHODS } from '../options'
import { npyHeader } from '../data/npy'
import { devices } from '../device'
import { averageLinkage, connectedComponents, evaluateClustering } from '../eval/clustering'
import { distance } from '../eval/embeddings'
import { embedFiles, storedAlignment } from '../inference'
import { FaceGallery, findFaces, HARMONIC_HINT, spaceMismatch } from '../recognize'
import { IncompatibleModelsError } from '../errors'
import { drawFaces } from './detect'
import type { FaceNet } from '../model'
import type { Device } from '../device'
import { centerCropOf, listImages, loadModel, outputProblem, thresholdOf, writeOutput } from './model'
import { ALIGN_FLAGS, alignOptionsOf, alignSchema } from './align'
import { counted, EXIT, MODEL_FLAGS, modelSchema, parseCommand, positiveInt, printHelp, SUMMARIES, UsageError, version, type CommandSpec, type FlagSpec } from './options'
import { drawnPaths } from './derived-names'

/** A float32 C-order `.npy`. */
export function npyBytes(data: Float32Array, shape: readonly number[]): Buffer {
  // numpy's '<f4' is little-endian; so is every platform this addon builds for.
  return Buffer.concat([npyHeader('<f4', shape), Buffer.from(data.buffer, data.byteOffset, data.byteLength)])
}

/** `--align` and its options, shared by embed, compare, identify and cluster. */
export const ALIGNING: Record<string, FlagSpec> = {
  align: { kind: 'boolean', help: "the images are raw photos: detect and align the largest face of each first (the default for a model that stores its alignment, such as the pretrained one)" },
  noAlign: { kind: 'boolean', help: 'the images are face crops already: embed them whole, even with a model that stores an alignment' },
  ...ALIGN_FLAGS,
}
export const aligning = { align: z.boolean().optional(), noAlign: z.boolean().default(false), ...alignSchema }
type AlignArgs = z.infer<z.ZodObject<typeof aligning>> & { device: string; threads?: number; batchSize?: number }

/** Whether to detect and align: as the flags say, else as the model stores. */
export function aligns(model: FaceNet, o: AlignArgs): boolean {
  if (o.align && o.noAlign) throw new UsageError('--align and --no-align contradict each other')
  return o.noAlign ? false : (o.align ?? storedAlignment(model) !== undefined)
}

/** The alignment flags as library options, on the model's device. */
export function alignWith(model: FaceNet, o: AlignArgs): ReturnType<typeof alignOptionsOf> {
  return { ...alignOptionsOf(o), device: model.device as Device }
}

/**
 * Embeds `paths` (aligned when {@link aligns}): one row per path, NaN rows for photos without a
 * face, which are also returned (and reported on stderr).
 */
async function embedPaths(model: FaceNet, paths: readonly string[], o: AlignArgs & { centerCrop?: number }): Promise<{ embeddings: Float32Array; noFace: string[] }> {
  const base = { centerCrop: centerCropOf(model, o), batchSize: o.batchSize }
  if (!aligns(model, o)) return { embeddings: await embedFiles(model, paths, base), noFace: [] }
  const out = await embedFiles(model, paths, { ...base, align: { ...alignWith(model, o), faces: 'largest' } })
  const noFace = out.noFace.map((i) => paths[i]!)
  for (const path of noFace) process.stderr.write(`no face found in ${path}\n`)
  return { embeddings: out.embeddings, noFace }
}

const THRESHOLD_FLAG = { kind: 'number', value: 'D', help: "squared-L2 distance below which two faces match (default: the one 'facenet eval' stored)" } as const

async function expandImages(args: readonly string[]): Promise<string[]> {
  const out: string[] = []
  for (const arg of args) {
    const path = resolve(arg)
    if (/\.(jpe?g|png|webp)$/i.test(path)) out.push(path)
    else out.push(...(await listImages(path)))
  }
  return out
}

// ---------------------------------------------------------------------------------------

const embedSchema = z.strictObject({ ...modelSchema, ...aligning, out: z.string().min(1).optional() })

export const embedSpec: CommandSpec<typeof embedSchema> = {
  name: 'embed',
  summary: SUMMARIES.embed,
  usage: 'facenet embed IMAGES… [--model M] [--out emb.npy|emb.json]',
  positionals: { name: 'image files or folders', min: 1 },
  flags: { ...MODEL_FLAGS, ...ALIGNING, out: { kind: 'string', value: 'FILE', help: '.npy (N×D float32) or .json ({ paths, dim, embeddings }); default: JSON on stdout' } },
  schema: embedSchema,
}

export async function embedCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(embedSpec, argv)
  if (parsed.help) return printHelp(embedSpec)
  const o = parsed.options
  const format = o.out === undefined ? 'stdout' : extname(o.out).toLowerCase()
  if (format !== 'stdout' && format !== '.npy' && format !== '.json') throw new UsageError(`--out: must end in .npy or .json, got ${JSON.stringify(o.out)}`)
  // Checked before embedding, which may take long: a missing folder must not cost the run.
  const unwritable = o.out === undefined ? undefined : await outputProblem(resolve(o.out))
  if (unwritable) throw new UsageError(`--out: ${unwritable}`)
  const paths = await expandImages(parsed.positionals)
  if (paths.length === 0) throw new UsageError('no images found in the given paths')
  using model = await loadModel(o)
  const dim = model.embeddingDim
  const { embeddings, noFace } = await embedPaths(model, paths, o)
  // A photo without a face has a NaN row in .npy and null in JSON (JSON has no NaN).
  const missing = new Set(noFace)
  const rows = paths.map((p, i) => (missing.has(p) ? null : Array.from(embeddings.subarray(i * dim, (i + 1) * dim))))
  // Stored with the embeddings, so that a gallery made of them later (FaceGallery.fromEmbeddings)
  // can refuse probes of a model in another space.
  const embeddingSpace = await model.embeddingSpace()
  const body = { paths, dim, embeddingSpace, embeddings: rows, ...(aligns(model, o) ? { noFace } : {}) }
  if (format === 'stdout') {
    console.log(JSON.stringify(body))
    return EXIT.ok
  }
  const out = resolve(o.out!)
  await writeOutput(out, format === '.npy' ? npyBytes(embeddings, [paths.length, dim]) : JSON.stringify(body))
  if (parsed.json) console.log(JSON.stringify({ out, count: paths.length, dim, embeddingSpace, ...(aligns(model, o) ? { noFace } : {}) }))
  else console.log(`${paths.length} embeddings of ${dim} values (embedding space ${embeddingSpace}) → ${out}`)
  return EXIT.ok
}

// ---------------------------------------------------------------------------------------

const compareSchema = z.strictObject({ ...modelSchema, ...aligning, threshold: z.number().positive().optional() })

export const compareSpec: CommandSpec<typeof compareSchema> = {
  name: 'compare',
  summary: SUMMARIES.compare,
  usage: 'facenet compare A.jpg B.jpg [--model M] [--threshold D]',
  positionals: { name: 'images', min: 2, max: 2 },
  flags: { ...MODEL_FLAGS, ...ALIGNING, threshold: THRESHOLD_FLAG },
  schema: compareSchema,
  notes: ["Without a threshold (flag or stored by 'facenet eval') it prints the distance only."],
}

export async function compareCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(compareSpec, argv)
  if (parsed.help) return printHelp(compareSpec)
  const o = parsed.options
  const paths = parsed.positionals.map((p) => resolve(p))
  using model = await loadModel(o)
  const { embeddings, noFace } = await embedPaths(model, paths, o)
  if (noFace.length > 0) {
    // Not an error of the data: there is simply nothing to compare.
    if (parsed.json) console.log(JSON.stringify({ a: paths[0], b: paths[1], distance: null, threshold: null, same: null, noFace }))
    else console.log(`no face found in ${noFace.join(' and ')}: nothing to compare`)
    return EXIT.failure
  }
  const d = distance(embeddings, model.embeddingDim, 0, 1, 'l2')
  const threshold = thresholdOf(model, o.threshold)
  const same = threshold === undefined ? null : d < threshold
  if (parsed.json) {
    console.log(JSON.stringify({ a: paths[0], b: paths[1], distance: d, threshold: threshold ?? null, same }))
  } else {
    const verdict = same === null ? "no threshold: run 'facenet eval' on this model or pass --threshold" : same ? 'same person' : 'different people'
    console.log(`distance ${d.toFixed(4)}${threshold === undefined ? '' : ` (threshold ${threshold.toFixed(4)})`}: ${verdict}`)
  }
  return EXIT.ok
}

// ---------------------------------------------------------------------------------------

const identifySchema = z.strictObject({
  ...modelSchema,
  ...aligning,
  gallery: z.string().min(1),
  galleryModel: z.string().min(1).optional(),
  probe: z.array(z.string().min(1)).optional(),
  top: positiveInt.default(5),
  threshold: z.number().positive().optional(),
  draw: z.string().min(1).optional(),
})

export const identifySpec: CommandSpec<typeof identifySchema> = {
  name: 'identify',
  summary: SUMMARIES.identify,
  usage: 'facenet identify --gallery DIR PHOTO... [--draw OUT.png] [--model M] [--gallery-model M1] | --probe IMG [--probe IMG…]',
  positionals: { name: 'photos', min: 0 },
  flags: {
    ...MODEL_FLAGS,
    ...ALIGNING,
    gallery: { kind: 'string', value: 'DIR', help: 'known faces, one folder per identity (the largest face of each photo)' },
    galleryModel: { kind: 'string', value: 'FILE', help: "the model that embeds the gallery when it is not --model's (a v1 whose gallery v2 probes search); refused unless --model was trained harmonically with it (default: --model)" },
    probe: { kind: 'strings', value: 'IMG', help: 'image whose largest face (or, with --no-align, the whole crop) to identify (repeatable)' },
    top: { kind: 'number', value: 'K', help: 'identities listed per face (default 5)' },
    threshold: THRESHOLD_FLAG,
    draw: { kind: 'string', value: 'OUT', help: 'draw each face of the PHOTOs with its name: a PNG file for one photo, a folder (PHOTO-NAME.png each) for several' },
  },
  schema: identifySchema,
  notes: [
    'Every face of each PHOTO is named after its nearest gallery identity, or unknown when that is farther',
    "than the threshold (--threshold, else the one stored with the model). Without a threshold it refuses.",
    'With --gallery-model, the gallery is embedded by that model (its threshold and alignment) and the faces by --model:',
    "the two must share an embedding space (--model trained with harmonic: { with: gallery model }), else it refuses.",
  ],
}

/** `--gallery-model` and `--model` must embed in one space; said with both flags named. */
async function checkSameSpace(galleryModel: FaceNet, probeModel: FaceNet): Promise<void> {
  const [gallerySpace, probeSpace] = await Promise.all([galleryModel.embeddingSpace(), probeModel.embeddingSpace()])
  const why = spaceMismatch({ dim: galleryModel.embeddingDim, space: gallerySpace }, { dim: probeModel.embeddingDim, space: probeSpace })
  if (why) throw new IncompatibleModelsError(`--gallery-model (${why.gallery}) and --model (${why.probe}) ${HARMONIC_HINT}`)
}

export async function identifyCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(identifySpec, argv)
  if (parsed.help) return printHelp(identifySpec)
  const o = parsed.options
  const photos = parsed.positionals.map((p) => resolve(p))
  const probes = (o.probe ?? []).map((p) => resolve(p))
  if (photos.length === 0 && probes.length === 0) throw new UsageError('name the photos to identify (positional) or --probe images')
  if (o.draw && photos.length === 0) throw new UsageError('--draw draws the faces of the PHOTOs; none were given')
  const drawTo = o.draw ? resolve(o.draw) : undefined
  const drawDir = drawTo && (photos.length > 1 || (await stat(drawTo).then((s) => s.isDirectory(), () => false))) ? drawTo : undefined
  const drawProblem = drawTo && !drawDir ? await outputProblem(drawTo) : undefined
  if (drawProblem) throw new UsageError(`--draw: ${drawProblem}`)
  // Named by the rule of derived-names.ts; refused before anything is written if DIR holds the photos.
  const drawnTo = drawDir ? drawnPaths(drawDir, photos) : undefined
  using model = await loadModel(o)
  using separateGalleryModel = o.galleryModel === undefined ? undefined : await loadModel({ ...o, model: o.galleryModel }, 'gallery-model')
  const galleryModel = separateGalleryModel ?? model
  const threshold = thresholdOf(galleryModel, o.threshold)
  if (threshold === undefined) throw new UsageError("--threshold: required, as the model has none stored (run 'facenet eval' on it)")
  const align = aligns(galleryModel, o)
  // Refused before the gallery is embedded: its photos may be many.
  if (separateGalleryModel) await checkSameSpace(separateGalleryModel, model)
  const { gallery, noFace: galleryNoFace } = await FaceGallery.fromFolder(galleryModel, resolve(o.gallery), { threshold, align: align ? alignWith(galleryModel, o) : false })
  for (const path of galleryNoFace) process.stderr.write(`no face found in gallery photo ${path}: left out\n`)
  const { embeddings, noFace } = probes.length > 0 ? await embedPaths(model, probes, o) : { embeddings: new Float32Array(0), noFace: [] }
  const faceless = new Set(noFace)
  const dim = model.embeddingDim
  const results = probes.map((probe, p) => {
    if (faceless.has(probe)) return { probe, match: null, threshold, candidates: [], noFace: true }
    const found = gallery.identify(embeddings.slice(p * dim, (p + 1) * dim), { top: o.top })
    return { probe, match: found.identity, threshold, candidates: found.candidates }
  })
  const found = photos.length > 0 ? await findFaces(model, photos, { align: alignWith(model, o) }) : []
  const photoResults = photos.map((photo, i) => ({
    photo,
    faces: found[i]!.map((face) => {
      const who = gallery.identify(face.embedding, { top: o.top })
      return { box: face.box, score: face.score, landmarks: face.landmarks, identity: who.identity, distance: who.distance, candidates: who.candidates }
    }),
  }))
  if (drawTo) {
    if (drawDir) await mkdir(drawDir, { recursive: true })
    for (const [i, r] of photoResults.entries()) {
      const out = drawnTo ? drawnTo[i]! : drawTo
      await drawFaces(r.photo, r.faces, out, r.faces.map((f) => `${f.identity ?? 'unknown'} ${f.distance.toFixed(2)}`))
    }
  }
  if (parsed.json) console.log(JSON.stringify({ threshold, ...(probes.length > 0 ? { results } : {}), ...(photos.length > 0 ? { photos: photoResults } : {}) }))
  else {
    for (const r of results) {
      console.log(`${r.probe}: ${r.match ?? 'unknown'}`)
      for (const c of r.candidates) console.log(`  ${c.distance.toFixed(4)}  ${c.identity}`)
    }
    for (const r of photoResults) {
      console.log(`${r.photo}: ${r.faces.length === 0 ? 'no face' : `${r.faces.length} face${r.faces.length === 1 ? '' : 's'}`}`)
      r.faces.forEach((f, k) => {
        const box = f.box.map((v) => Math.round(v)).join(',')
        console.log(`  face ${k + 1} [${box}]: ${f.identity ?? 'unknown'} (distance ${f.distance.toFixed(4)}, threshold ${threshold.toFixed(4)})`)
      })
    }
    if (drawTo) console.log(`drawn → ${drawTo}`)
  }
  return EXIT.ok
}

// ---------------------------------------------------------------------------------------

const clusterSchema = z.strictObject({
  ...modelSchema,
  ...aligning,
  threshold: z.number().positive().optional(),
  method: z.enum(CLUSTERING_METHODS).default('average-linkage'),
})

export const clusterSpec: CommandSpec<typeof clusterSchema> = {
  name: 'cluster',
  summary: SUMMARIES.cluster,
  usage: 'facenet cluster DIR [--model M] [--threshold D] [--method average-linkage|connected-components]',
  positionals: { name: 'folder', min: 1, max: 1 },
  flags: {
    ...MODEL_FLAGS,
    ...ALIGNING,
    threshold: THRESHOLD_FLAG,
    method: { kind: 'string', value: 'NAME', help: 'average-linkage (default) or connected-components' },
  },
  schema: clusterSchema,
  notes: ['When every image sits in a subfolder, the subfolders count as true identities and purity, NMI and pairwise F are printed.'],
}

export async function clusterCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(clusterSpec, argv)
  if (parsed.help) return printHelp(clusterSpec)
  const o = parsed.options
  const root = resolve(parsed.positionals[0]!)
  const listed = await listImages(root)
  if (listed.length === 0) throw new UsageError(`no images in ${root}`)
  using model = await loadModel(o)
  const threshold = thresholdOf(model, o.threshold)
  if (threshold === undefined) throw new UsageError("--threshold: required, as the model has none stored (run 'facenet eval' on it)")
  const dim = model.embeddingDim
  const embedded = await embedPaths(model, listed, o)
  // Photos without a face are left out of the clusters and listed apart.
  const faceless = new Set(embedded.noFace)
  const kept = listed.map((p, i) => [p, i] as const).filter(([p]) => !faceless.has(p))
  const paths = kept.map(([p]) => p)
  const embeddings = new Float32Array(kept.length * dim)
  kept.forEach(([, i], row) => embeddings.set(embedded.embeddings.subarray(i * dim, (i + 1) * dim), row * dim))
  const folders = paths.map((p) => relative(root, p).split(sep).slice(0, -1).join('/'))
  const labelled = folders.every((f) => f !== '')
  const scored = labelled ? evaluateClustering({ embeddings, dim }, folders, { threshold, method: o.method }) : undefined
  const assignments = scored?.assignments ?? (o.method === 'average-linkage' ? averageLinkage : connectedComponents)(embeddings, dim, threshold, 'l2')
  const clusters: string[][] = []
  assignments.forEach((c, i) => (clusters[c] ??= []).push(paths[i]!))
  const scores = scored
    ? { identities: scored.identityCount, purity: scored.purity, nmi: scored.nmi, pairwiseF: scored.pairwiseF, pairwisePrecision: scored.pairwisePrecision, pairwiseRecall: scored.pairwiseRecall }
    : undefined
  const noFace = aligns(model, o) ? { noFace: embedded.noFace } : {}
  if (parsed.json) console.log(JSON.stringify({ threshold, method: o.method, clusters, ...(scores ? { scores } : {}), ...noFace }))
  else {
    console.log(`${counted(paths.length, 'face')} → ${counted(clusters.length, 'cluster')} (${o.method}, threshold ${threshold.toFixed(4)})`)
    clusters.forEach((members, c) => {
      console.log(`cluster ${c} (${members.length}):`)
      for (const m of members) console.log(`  ${relative(root, m)}`)
    })
    if (scores) {
      console.log(`against the ${scores.identities} subfolders: purity ${scores.purity.toFixed(4)}, NMI ${scores.nmi.toFixed(4)}, pairwise F ${scores.pairwiseF.toFixed(4)}`)
    }
  }
  return EXIT.ok
}

// ---------------------------------------------------------------------------------------

const infoSchema = z.strictObject({})

export const infoSpec: CommandSpec<typeof infoSchema> = {
  name: 'info',
  summary: SUMMARIES.info,
  usage: 'facenet info [--json]',
  flags: {},
  schema: infoSchema,
}

export async function infoCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(infoSpec, argv)
  if (parsed.help) return printHelp(infoSpec)
  const d = devices()
  const info = { version: version(), libtorch: d.libtorchVersion, node: process.version, devices: d }
  if (parsed.json) console.log(JSON.stringify(info))
  else {
    console.log(`facenet-torch ${info.version}`)
    console.log(`libtorch      ${info.libtorch}, ${d.cudaLibrariesLoaded ? 'with CUDA' : 'CPU only'} (${d.libtorchPath}, found via ${d.libtorchSource})`)
    console.log(`node          ${info.node}`)
    console.log(`cpu           ${d.cpuThreads} threads`)
    const cudaWhy = d.cudaLibrariesLoaded ? '' : ` (libtorch_cuda not loaded: ${d.cudaLoadError ?? 'CPU-only install'})`
    console.log(`cuda          ${d.cudaAvailable ? `${d.cudaDeviceCount} device(s)${d.cudnnAvailable ? ', cuDNN' : ''}` : `not available${cudaWhy}`}`)
  }
  return EXIT.ok
}
