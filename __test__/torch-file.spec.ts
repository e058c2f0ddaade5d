/**
 * PyTorch `torch.save` files read without Python: facenet-pytorch's InceptionResnetV1
 * state_dict (zip and legacy formats) gives facenet-pytorch's own embeddings, `facenet
 * convert` writes a safetensors file that embeds identically, and hostile files (code in
 * the pickle, lying sizes, truncation) are WeightsErrors that run nothing.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FaceNet, WeightsError } from '../src'
import { pixels, startCli } from './helpers'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const script = join(__dirname, 'fixtures', 'torch_save.py')
const dir = mkdtempSync(join(tmpdir(), 'facenet-torch-file-'))
test.after.always(() => rmSync(dir, { recursive: true, force: true }))

const COUNT = 3
const images = pixels(COUNT * 160 * 160 * 3, 41)
const zipFile = join(dir, 'irv1.pt')
const legacyFile = join(dir, 'irv1-legacy.pth')
let reference: { tensors: number; embeddings: number[] } | undefined

/** facenet-pytorch's embeddings of `images`, saving the two .pt files on first use. */
function pytorch(): { tensors: number; embeddings: number[] } {
  if (!reference) {
    const pixelsFile = join(dir, 'pixels.u8')
    writeFileSync(pixelsFile, images)
    const out = execFileSync(python, [script, 'weights', zipFile, legacyFile, pixelsFile, String(COUNT)], { encoding: 'utf8', maxBuffer: 64 << 20 })
    reference = JSON.parse(out) as { tensors: number; embeddings: number[] }
  }
  return reference
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!))
  return worst
}

for (const [format, file] of [
  ['zip', () => zipFile],
  ['legacy', () => legacyFile],
] as const) {
  test.serial(`a facenet-pytorch InceptionResnetV1 saved by torch.save (${format}) loads without an arch and embeds as facenet-pytorch does`, async (t) => {
    const expected = pytorch()
    using model = await FaceNet.load(file(), { device: 'cpu', threads: 2 })
    t.like(model.info, { arch: 'inception-resnet-v1', embeddingDim: 512, normalization: 'fixed' })
    const ours = await model.embed(images)
    t.is(ours.length, expected.embeddings.length)
    const worst = maxAbsDiff(ours, expected.embeddings)
    t.log(`${format}: max |ours − facenet-pytorch| over ${COUNT}×512 = ${worst.toExponential(2)}`)
    t.true(worst < 1e-5, `largest difference ${worst}`)
  })
}

test.serial('facenet convert writes a safetensors file that loads without --arch and embeds identically', async (t) => {
  pytorch()
  const out = join(dir, 'converted.safetensors')
  const run = await startCli(['convert', zipFile, out, '--json']).done
  t.is(run.code, 0, run.stderr)
  const result = JSON.parse(run.stdout) as Record<string, unknown>
  t.like(result, { input: zipFile, output: out, arch: 'inception-resnet-v1', embeddingDim: 512, normalization: 'fixed' })
  using fromTorch = await FaceNet.load(zipFile, { device: 'cpu', threads: 2 })
  using converted = await FaceNet.load(out, { device: 'cpu', threads: 2 })
  t.deepEqual(converted.info, fromTorch.info)
  t.deepEqual(await converted.embed(images), await fromTorch.embed(images))

  // Usage errors exit 2 and write nothing.
  const wrongExtension = await startCli(['convert', zipFile, join(dir, 'out.pt')]).done
  t.is(wrongExtension.code, 2)
  t.regex(wrongExtension.stderr, /must end in \.safetensors/)
  const wrongArch = await startCli(['convert', zipFile, join(dir, 'nn4.safetensors'), '--arch', 'nn4']).done
  t.is(wrongArch.code, 1)
  t.regex(wrongArch.stderr, /irv1\.pt: the tensor names are those of a 'inception-resnet-v1' model, not 'nn4' \[ERR_WEIGHTS\]/)
  t.false(existsSync(join(dir, 'nn4.safetensors')))
})

test.serial('a state_dict whose tensor names say no arch needs one, and must then match it', async (t) => {
  const file = join(dir, 'linear.pt')
  execFileSync(python, [script, 'linear', file])
  const noArch = await t.throwsAsync(FaceNet.load(file, { device: 'cpu', threads: 1 }), { instanceOf: WeightsError })
  t.regex(noArch!.message, /linear\.pt: the file does not name an arch .*pass the arch to load it/)
  const wrong = await t.throwsAsync(FaceNet.load(file, { device: 'cpu', threads: 1, arch: 'tiny' }), { instanceOf: WeightsError })
  t.regex(wrong!.message, /linear\.pt: tensor 'fc\.weight' of a 'tiny' model is missing/)
})

test.serial('hostile .pt files are WeightsErrors that name the file and what was refused, and run nothing', async (t) => {
  const hostile = join(dir, 'hostile')
  execFileSync('mkdir', ['-p', hostile])
  const marker = join(hostile, 'pwned')
  const files = JSON.parse(execFileSync(python, [script, 'hostile', hostile, marker], { encoding: 'utf8' })) as Record<string, string>
  t.true(Object.keys(files).length >= 10)
  for (const [name, why] of Object.entries(files)) {
    const path = join(hostile, name)
    for (const arch of [undefined, 'inception-resnet-v1'] as const) {
      const error = await t.throwsAsync(FaceNet.load(path, { device: 'cpu', threads: 1, ...(arch ? { arch } : {}) }), { instanceOf: WeightsError }, name)
      t.is((error as WeightsError).code, 'ERR_WEIGHTS')
      t.true(error!.message.startsWith(`${path}: `), error!.message)
      t.true(error!.message.includes(why), `${name}: expected '${why}' in: ${error!.message}`)
    }
  }
  const cli = await startCli(['convert', join(hostile, 'os-system.pt'), join(hostile, 'out.safetensors')]).done
  t.is(cli.code, 1)
  t.regex(cli.stderr, /refused global 'posix\.system'.*\[ERR_WEIGHTS\]/)
  t.false(existsSync(join(hostile, 'out.safetensors')))
  t.false(existsSync(marker), 'a payload ran')
})
