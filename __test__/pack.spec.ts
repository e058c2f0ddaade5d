// facenet pack / packImageFolder: an identity folder decoded once into images.npy +
// names.npy that NpyDataset and numpy read, resumable after an interruption.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeImages, ImageFolder, InvalidArgumentError, NpyDataset, packImageFolder } from '../src'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()

/** Eight shipped identities plus one file that is not an image. */
function sourceFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'facenet-pack-src-'))
  const lfw = join(root, 'data', 'lfw')
  const people = readdirSync(lfw).filter((n) => !n.includes('.')).sort().slice(0, 8)
  for (const person of people) cpSync(join(lfw, person), join(dir, person), { recursive: true })
  writeFileSync(join(dir, people[0]!, 'broken.jpg'), 'not a jpeg')
  mkdirSync(join(dir, people[1]!), { recursive: true })
  return dir
}

const quiet = { onWarning: () => {} }

test('the packed rows are the loader decode of every good image, and numpy reads the same bytes', async (t) => {
  const src = sourceFolder()
  const out = mkdtempSync(join(tmpdir(), 'facenet-pack-'))
  const result = await packImageFolder(src, out, { size: 48, centerCrop: 0.7, batchSize: 5, ...quiet })
  t.true(result.complete)
  t.is(result.skipped.length, 1)
  t.regex(result.skipped[0]!.file, /broken\.jpg$/)

  const folder = await ImageFolder.open(src, { onBadImage: 'skip', onWarning: () => {} })
  const good = folder.items.filter((item) => !item.path.endsWith('broken.jpg'))
  t.is(result.count, good.length)
  const expected = await decodeImages(
    good.map((item) => item.path),
    { height: 48, width: 48 },
    { centerCrop: 0.7 },
  )
  const packed = await NpyDataset.open({ images: result.images, names: result.names })
  t.is(packed.length, good.length)
  t.deepEqual(packed.names, good.map((item) => item.identity))
  const bytes = readFileSync(result.images)
  t.true(Buffer.from(expected.data).equals(bytes.subarray(bytes.length - expected.data.length)))

  const report = execFileSync(python, ['-c', 'import hashlib, sys, numpy as np; a = np.load(sys.argv[1]); n = np.load(sys.argv[2]); print(a.shape, a.dtype, len(n), n[0], hashlib.sha256(a.tobytes()).hexdigest())', result.images, result.names], { encoding: 'utf8' }).trim()
  const sha = (await import('node:crypto')).createHash('sha256').update(expected.data).digest('hex')
  t.is(report, `(${good.length}, 48, 48, 3) uint8 ${good.length} ${good[0]!.identity} ${sha}`)
  const index = JSON.parse(readFileSync(result.index, 'utf8')) as { count: number; size: number; centerCrop: number; skipped: unknown[] }
  t.like(index, { count: good.length, size: 48, centerCrop: 0.7 })
  t.is(index.skipped.length, 1)
})

test('an interrupted pack resumes to the same bytes as an uninterrupted one', async (t) => {
  const src = sourceFolder()
  const once = mkdtempSync(join(tmpdir(), 'facenet-pack-once-'))
  const twice = mkdtempSync(join(tmpdir(), 'facenet-pack-twice-'))
  await packImageFolder(src, once, { size: 32, batchSize: 4, ...quiet })
  const controller = new AbortController()
  const first = await packImageFolder(src, twice, {
    size: 32,
    batchSize: 4,
    ...quiet,
    signal: controller.signal,
    onProgress: (done) => {
      if (done >= 8) controller.abort()
    },
  })
  t.false(first.complete)
  t.true(first.count >= 7 && first.count < 20, `stopped after ${first.count} rows`)
  // Until the pack completes its rows sit in a partial file; images.npy does not exist yet.
  t.false(existsSync(first.images))
  // Bytes an interrupted writer appended past its last record are dropped on resume.
  writeFileSync(`${first.images}.partial`, Buffer.alloc(100, 7), { flag: 'a' })
  const second = await packImageFolder(src, twice, { size: 32, batchSize: 4, ...quiet })
  t.true(second.complete)
  t.true(second.resumed >= 8)
  for (const name of ['images.npy', 'names.npy']) t.true(readFileSync(join(once, name)).equals(readFileSync(join(twice, name))), name)
  // A finished pack with the same options is a no-op; other options refuse to mix.
  const again = await packImageFolder(src, twice, { size: 32, batchSize: 4, ...quiet })
  t.is(again.resumed, again.count + again.skipped.length)
  await t.throwsAsync(packImageFolder(src, twice, { size: 64, ...quiet }), { instanceOf: InvalidArgumentError, message: /at size 32.*this call packs .* at size 64/ })
})

test('facenet pack writes the files and reports the skipped image', (t) => {
  const src = sourceFolder()
  const out = join(mkdtempSync(join(tmpdir(), 'facenet-pack-cli-')), 'packed')
  const stdout = execFileSync(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'index.ts'), 'pack', src, out, '--size', '40', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
  const result = JSON.parse(stdout) as { complete: boolean; count: number; skipped: { file: string }[] }
  t.true(result.complete)
  t.is(result.skipped.length, 1)
  t.deepEqual(readdirSync(out).sort(), ['images.npy', 'index.json', 'names.npy', 'pack.json'])
})
