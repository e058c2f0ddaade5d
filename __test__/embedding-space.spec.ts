import test from 'ava'
import { cpSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { EMBEDDING_SPACE_KEY, FaceGallery, FaceNet, ImageFolder, IncompatibleModelsError, Trainer } from '../src'
import { LFW_IDENTITIES } from '../scripts/reliability-train'
import { startCli } from './helpers'

const root = resolve(__dirname, '..', 'data', 'lfw')
const tmp = (tag: string) => mkdtempSync(join(tmpdir(), `facenet-space-${tag}-`))
let folder: Promise<ImageFolder> | undefined
const data = () => (folder ??= ImageFolder.open(root).then((f) => f.subset(LFW_IDENTITIES)))
const small = { identitiesPerBatch: 3, imagesPerIdentity: 4, negativesPerBatch: 0, augment: false as const, seed: 2 }
const tiny = (seed: number) => FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed, threads: 1 })

/** A gallery folder of two identities, two LFW crops each, and a probe crop of the first. */
function galleryFolder(): { dir: string; probe: string } {
  const dir = tmp('gallery')
  for (const who of LFW_IDENTITIES.slice(0, 2)) {
    mkdirSync(join(dir, who))
    for (const file of readdirSync(join(root, who)).sort().slice(0, 2)) cpSync(join(root, who, file), join(dir, who, file))
  }
  const first = LFW_IDENTITIES[0]!
  return { dir, probe: join(root, first, readdirSync(join(root, first)).sort()[2]!) }
}

test('a model that has not been trained harmonically is its own space: the digest of its weights, kept by save and load', async (t) => {
  using a = await tiny(1)
  using b = await tiny(1)
  using c = await tiny(2)
  const space = await a.embeddingSpace()
  t.regex(space, /^weights:[0-9a-f]{16}$/)
  t.is(await b.embeddingSpace(), space, 'bit-identical weights share a space')
  t.not(await c.embeddingSpace(), space)
  const file = join(tmp('plain'), 'a.safetensors')
  await a.save(file, { metadata: { note: 'metadata does not move the space' } })
  using loaded = await FaceNet.load(file, { device: 'cpu', threads: 1 })
  t.is(await loaded.embeddingSpace(), space)
  t.is(loaded.metadata[EMBEDDING_SPACE_KEY], undefined, 'nothing is declared for a plain model')
})

test("harmonic training declares v1's space (saved with v2); training alone, or training a harmonic v2 on, does not", async (t) => {
  using v1 = await tiny(1)
  const v1Space = await v1.embeddingSpace()
  const dir = tmp('harmonic')

  using harmonic = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed: 3, threads: 1, tiny: { widths: [16, 32, 64, 96] } })
  await new Trainer(harmonic, { ...small, harmonic: { with: v1 } }).fit(await data(), { maxSteps: 2 })
  t.is(await harmonic.embeddingSpace(), v1Space)
  await harmonic.save(join(dir, 'v2.safetensors'))
  using v2 = await FaceNet.load(join(dir, 'v2.safetensors'), { device: 'cpu', threads: 1 })
  t.is(v2.metadata[EMBEDDING_SPACE_KEY], v1Space)
  t.is(await v2.embeddingSpace(), v1Space)

  using alone = await FaceNet.create({ arch: 'tiny', embeddingDim: 32, device: 'cpu', seed: 3, threads: 1, tiny: { widths: [16, 32, 64, 96] } })
  await new Trainer(alone, small).fit(await data(), { maxSteps: 2 })
  t.not(await alone.embeddingSpace(), v1Space)

  // A loaded harmonic v2 trained further on its own: its weights left v1's space, and so does its file.
  await new Trainer(v2, small).fit(await data(), { maxSteps: 1 })
  t.not(await v2.embeddingSpace(), v1Space)
  await v2.save(join(dir, 'v3.safetensors'))
  using v3 = await FaceNet.load(join(dir, 'v3.safetensors'), { device: 'cpu', threads: 1 })
  t.is(v3.metadata[EMBEDDING_SPACE_KEY], undefined)
  t.is(await v3.embeddingSpace(), await v2.embeddingSpace())

  // A gallery embedded by v1 takes probes of the harmonic v2 and refuses the others.
  const { dir: galleryDir } = galleryFolder()
  const { gallery } = await FaceGallery.fromFolder(v1, galleryDir, { threshold: 1, align: false })
  t.is(gallery.embeddingSpace, v1Space)
  await t.notThrowsAsync(gallery.checkCompatible(harmonic))
  const refused = await t.throwsAsync(gallery.checkCompatible(alone), { instanceOf: IncompatibleModelsError })
  t.is(refused?.code, 'ERR_INCOMPATIBLE_MODELS')
  t.true(refused?.message.includes(v1Space) && refused.message.includes(await alone.embeddingSpace()), refused?.message)
  using wide = await FaceNet.create({ arch: 'tiny', embeddingDim: 16, device: 'cpu', seed: 1, threads: 1 })
  await t.throwsAsync(gallery.checkCompatible(wide), { instanceOf: IncompatibleModelsError, message: /16-d.*\)|32-d/ })
  // Embeddings stored without a space are taken on trust (for their dimension).
  const stored = FaceGallery.fromEmbeddings(['a'], new Float32Array(32), 32, 1)
  await t.notThrowsAsync(stored.checkCompatible(alone))
  const tagged = FaceGallery.fromEmbeddings(['a'], new Float32Array(32), 32, 1, { embeddingSpace: v1Space })
  await t.notThrowsAsync(tagged.checkCompatible(harmonic))
  await t.throwsAsync(tagged.checkCompatible(alone), { instanceOf: IncompatibleModelsError })
})

test('facenet identify --gallery-model v1 --model v2: searched when v2 was trained harmonically with v1, refused before any embedding otherwise', async (t) => {
  const dir = tmp('cli')
  const v1 = await tiny(1)
  await v1.save(join(dir, 'v1.safetensors'))
  const v2 = await tiny(5)
  await new Trainer(v2, { ...small, harmonic: { with: v1 } }).fit(await data(), { maxSteps: 1 })
  await v2.save(join(dir, 'v2.safetensors'))
  const other = await tiny(6)
  await other.save(join(dir, 'other.safetensors'))
  for (const m of [v1, v2, other]) m.dispose()
  const { dir: galleryDir, probe } = galleryFolder()
  const common = ['--gallery', galleryDir, '--probe', probe, '--gallery-model', join(dir, 'v1.safetensors'), '--no-align', '--threshold', '4', '--device', 'cpu', '--threads', '1', '--json']

  const ok = await startCli(['identify', ...common, '--model', join(dir, 'v2.safetensors')]).done
  t.is(ok.code, 0, ok.stderr)
  t.regex(ok.stderr, /gallery-model: .*v1\.safetensors/)
  const [result] = (JSON.parse(ok.stdout) as { results: { probe: string; candidates: { identity: string }[] }[] }).results
  t.is(result?.probe, probe)
  t.deepEqual(result?.candidates.map((c) => c.identity).sort(), LFW_IDENTITIES.slice(0, 2).sort())

  // `facenet embed` writes the space beside the embeddings, for a gallery built from them later.
  const embedded = await startCli(['embed', '--model', join(dir, 'v2.safetensors'), '--no-align', '--device', 'cpu', '--threads', '1', probe]).done
  t.is(embedded.code, 0, embedded.stderr)
  const body = JSON.parse(embedded.stdout) as { dim: number; embeddingSpace: string; embeddings: number[][] }
  using v1Loaded = await FaceNet.load(join(dir, 'v1.safetensors'), { device: 'cpu', threads: 1 })
  t.is(body.embeddingSpace, await v1Loaded.embeddingSpace())

  const refused = await startCli(['identify', ...common, '--model', join(dir, 'other.safetensors')]).done
  t.not(refused.code, 0)
  t.regex(refused.stderr, /--gallery-model \(32-d, space weights:[0-9a-f]{16}\) and --model \(32-d, space weights:[0-9a-f]{16}\) do not share an embedding space/)
  t.regex(refused.stderr, /ERR_INCOMPATIBLE_MODELS|harmonic/)
  t.is(refused.stdout, '')
})
