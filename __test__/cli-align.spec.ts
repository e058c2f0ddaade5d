/**
 * `facenet align` and the `--align` flags, driven as real subprocesses (node + tsx on
 * src/cli/index.ts). Faces are given with `--detections`, so this spec needs no detector.
 */
import test from 'ava'
import { spawn } from 'node:child_process'
import { copyFile, mkdir, mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import sharp from 'sharp'
import { TEMPLATE } from './helpers'

const ROOT = resolve(__dirname, '..')
const LFW = join(ROOT, 'data', 'lfw')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function cli(...args: string[]): Promise<Run> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'index.ts'), ...args], { cwd: ROOT, env: { ...process.env, FORCE_COLOR: '0' } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((done) => child.on('close', (code) => done({ code, stdout, stderr })))
}

const face = (dx: number, dy: number) => ({ box: [dx, dy, dx + 112, dy + 112], score: 0.99, landmarks: TEMPLATE.map(([x, y]) => [x! + dx, y! + dy]) })

async function rawDir(): Promise<{ raw: string; out: string; detections: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'facenet-cli-align-'))
  const raw = join(dir, 'raw')
  for (const [name, files] of [
    ['Tony_Blair', ['Tony_Blair_0018.jpg', 'Tony_Blair_0032.jpg']],
    ['Colin_Powell', ['Colin_Powell_0040.jpg', 'Colin_Powell_0049.jpg']],
  ] as const) {
    await mkdir(join(raw, name), { recursive: true })
    for (const f of files) await copyFile(join(LFW, name, f), join(raw, name, f))
  }
  const detections = join(dir, 'detections.json')
  await writeFile(
    detections,
    JSON.stringify({
      'Tony_Blair/Tony_Blair_0018.jpg': [face(19, 19)],
      'Tony_Blair/Tony_Blair_0032.jpg': [face(19, 19), face(0, 0)],
      'Colin_Powell/Colin_Powell_0040.jpg': [],
      'Colin_Powell/Colin_Powell_0049.jpg': [face(10, 25)],
    }),
  )
  return { raw, out: join(dir, 'out'), detections }
}

test('align: identity folders in and out, a summary of photos without or with several faces, and resuming', async (t) => {
  const { raw, out, detections } = await rawDir()
  const run = await cli('align', raw, out, '--size', '112', '--detections', detections, '--json', '--threads', '1')
  t.is(run.code, 0, run.stderr)
  t.regex(run.stderr, /align: 4\/4 photos/)
  const result = JSON.parse(run.stdout) as Record<string, number>
  t.like(result, { photos: 4, aligned: 4, resumedFrom: 0, written: 3, noFace: 1, multipleFaces: 1, bad: 0 })
  t.deepEqual((await readdir(join(out, 'Tony_Blair'))).sort(), ['Tony_Blair_0018.jpg', 'Tony_Blair_0032.jpg'])
  t.deepEqual(await readdir(join(out, 'Colin_Powell')), ['Colin_Powell_0049.jpg'])
  const summary = JSON.parse(await readFile(join(out, 'align-summary.json'), 'utf8')) as { noFace: string[]; multipleFaces: { file: string; faces: number }[] }
  t.deepEqual(summary.noFace, ['Colin_Powell/Colin_Powell_0040.jpg'])
  t.deepEqual(summary.multipleFaces, [{ file: 'Tony_Blair/Tony_Blair_0032.jpg', faces: 2 }])
  // The crop of a face at the template shifted by (19, 19) is the photo's pixels 19..130.
  const crop = await sharp(join(out, 'Tony_Blair', 'Tony_Blair_0018.jpg')).raw().toBuffer({ resolveWithObject: true })
  const photo = await sharp(join(raw, 'Tony_Blair', 'Tony_Blair_0018.jpg')).extract({ left: 19, top: 19, width: 112, height: 112 }).raw().toBuffer()
  t.deepEqual([crop.info.width, crop.info.height, crop.info.channels], [112, 112, 3])
  let diff = 0
  for (let i = 0; i < photo.length; i++) diff += Math.abs(photo[i]! - crop.data[i]!)
  t.true(diff / photo.length < 3, `mean abs difference ${diff / photo.length} (JPEG re-encoding only)`)

  // Again: everything is done, including the photo without a face.
  const mtime = (await stat(join(out, 'Tony_Blair', 'Tony_Blair_0018.jpg'))).mtimeMs
  const again = await cli('align', raw, out, '--size', '112', '--detections', detections, '--json')
  t.is(again.code, 0, again.stderr)
  t.like(JSON.parse(again.stdout), { photos: 4, aligned: 0, resumedFrom: 4 })
  t.is((await stat(join(out, 'Tony_Blair', 'Tony_Blair_0018.jpg'))).mtimeMs, mtime)
  // A new photo is the only one aligned on the next run; other options are refused.
  await copyFile(join(LFW, 'Tony_Blair', 'Tony_Blair_0048.jpg'), join(raw, 'Tony_Blair', 'Tony_Blair_0048.jpg'))
  const more = JSON.parse(await readFile(detections, 'utf8')) as Record<string, unknown>
  await writeFile(detections, JSON.stringify({ ...more, 'Tony_Blair/Tony_Blair_0048.jpg': [face(19, 19)] }))
  const third = await cli('align', raw, out, '--size', '112', '--detections', detections, '--json')
  t.like(JSON.parse(third.stdout), { photos: 5, aligned: 1, resumedFrom: 4, written: 4 })
  const other = await cli('align', raw, out, '--size', '96', '--detections', detections)
  t.is(other.code, 2)
  t.regex(other.stderr, /aligned with other options/)
})

test("align: an undecodable photo stops the run naming it, or with --on-bad-image skip is listed in the summary", async (t) => {
  const { raw, out, detections } = await rawDir()
  const corrupt = join(raw, 'Tony_Blair', 'Tony_Blair_0009.jpg')
  await writeFile(corrupt, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 1, 2]))
  const stopped = await cli('align', raw, out, '--detections', detections)
  t.is(stopped.code, 1)
  t.true(stopped.stderr.includes(corrupt), stopped.stderr)
  t.regex(stopped.stderr, /ERR_DATA/)
  const skipped = await cli('align', raw, out, '--detections', detections, '--on-bad-image', 'skip', '--json')
  t.is(skipped.code, 0, skipped.stderr)
  t.like(JSON.parse(skipped.stdout), { photos: 5, bad: 1, noFace: 1 })
  const summary = JSON.parse(await readFile(join(out, 'align-summary.json'), 'utf8')) as { bad: { file: string }[] }
  t.deepEqual(summary.bad.map((b) => b.file), ['Tony_Blair/Tony_Blair_0009.jpg'])
})

test('align and --align: usage errors exit 2 and name the flag', async (t) => {
  const { raw, out } = await rawDir()
  const mode = await cli('align', raw, out, '--mode', 'affine')
  t.is(mode.code, 2)
  t.regex(mode.stderr, /--mode/)
  const inside = await cli('align', raw, join(raw, 'crops'))
  t.is(inside.code, 2)
  t.regex(inside.stderr, /is inside the input folder .* must go to a folder outside it/)
  for (const command of ['embed', 'compare', 'identify', 'cluster']) {
    const help = await cli(command, '--help')
    t.regex(help.stdout, /--align\b/, command)
    t.regex(help.stdout, /--align-size N/, command)
  }
  const bad = await cli('embed', '--model', 'm.safetensors', '--align', '--align-mode', 'nope', raw)
  t.is(bad.code, 2)
  t.regex(bad.stderr, /--align-mode/)
})
