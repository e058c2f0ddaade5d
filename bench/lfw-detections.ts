/**
 * This library's MTCNN on every shipped LFW photo, as `{ "Name/Name_0001.jpg": [{ box, score,
 * landmarks }, ...] }` (the format of bench/lfw_detections.py and `facenet align --detections`).
 *
 *   npx tsx bench/lfw-detections.ts [OUT] [--threads N]
 *
 * OUT defaults to bench/.cache/lfw-ours-mtcnn.json. Default MTCNN options (min face 20,
 * factor 0.709, thresholds 0.6/0.7/0.7).
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join, relative } from 'node:path'
import { FaceDetector, LfwPairs } from '../src/index'

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const threadsAt = args.indexOf('--threads')
  const threads = threadsAt >= 0 ? Number(args.splice(threadsAt, 2)[1]) : 1
  const out = args[0] ?? join(__dirname, '.cache', 'lfw-ours-mtcnn.json')
  const root = join(__dirname, '..', 'data', 'lfw')
  const files = (await LfwPairs.parse(join(root, 'pairs.txt'))).imagePaths()
  const detector = await FaceDetector.load({ threads })
  const result: Record<string, unknown> = {}
  const started = Date.now()
  try {
    for (let at = 0; at < files.length; at += 64) {
      const chunk = files.slice(at, at + 64)
      const found = await detector.detectFiles(chunk)
      chunk.forEach((file, i) => (result[relative(root, file)] = found[i]))
      process.stderr.write(`\r${at + chunk.length}/${files.length} photos, ${((Date.now() - started) / 1000).toFixed(0)} s`)
    }
  } finally {
    detector.dispose()
  }
  await mkdir(dirname(out), { recursive: true })
  await writeFile(out, JSON.stringify(result))
  const counts = Object.values(result) as unknown[][]
  console.log(JSON.stringify({ photos: counts.length, noFace: counts.filter((f) => f.length === 0).length, multipleFaces: counts.filter((f) => f.length > 1).length, seconds: (Date.now() - started) / 1000, threads }))
}

void main()
