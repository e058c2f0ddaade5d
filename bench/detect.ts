/**
 * Face detection throughput: photos/s of our MTCNN beside facenet-pytorch 2.6.0's
 * (bench/detect.py) on the same 640×480 photos, in one run. The photos are the detection
 * specs' composites (LFW faces pasted on plain, gradient, noise and texture backgrounds, a
 * fifth of them with no face). BATCH photos per call on both sides (1: one photo at a time;
 * more: an N×H×W×3 batch, which both run through the pyramid together), decoding excluded:
 * both take the same RGB pixels. The two sides alternate ROUNDS times per setting so that
 * both see the same machine state; the figure is each side's median round.
 *
 * Run: npx tsx bench/detect.ts [device=cpu] [threads=1,2] [photos=40] [rounds=3] [batch=1,8]
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { type Device, FaceDetector } from '../src'
import { composites, HEIGHT, lfwPhotos, WIDTH } from '../__test__/fixtures/composites'

const root = resolve(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const device = (process.argv[2] ?? 'cpu') as Device
const threadCounts = (process.argv[3] ?? '1,2').split(',').map(Number)
const count = Number(process.argv[4] ?? 40)
const rounds = Number(process.argv[5] ?? 3)
const batches = (process.argv[6] ?? '1,8').split(',').map(Number)
const PHOTO = HEIGHT * WIDTH * 3

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

async function ours(detector: FaceDetector, all: Uint8Array, count: number, batch: number): Promise<{ rate: number; faces: number }> {
  let faces = 0
  const start = performance.now()
  for (let at = 0; at < count; at += batch) {
    const n = Math.min(batch, count - at)
    const found = await detector.detect({ data: all.subarray(at * PHOTO, (at + n) * PHOTO), shape: [n, HEIGHT, WIDTH, 3] })
    faces += found.reduce((sum, f) => sum + f.length, 0)
  }
  return { rate: count / ((performance.now() - start) / 1000), faces }
}

async function main(): Promise<void> {
  // Faces are pasted wherever the patch is: the bench needs photos, not true boxes.
  const made = await composites(lfwPhotos(join(root, 'data', 'lfw')), count, 5, async () => [30, 20, 120, 130])
  const all = new Uint8Array(Buffer.concat(made.map((c) => c.data)))
  const dir = mkdtempSync(join(tmpdir(), 'detect-bench-'))
  const raw = join(dir, 'photos.rgb')
  writeFileSync(raw, all)
  const pasted = made.reduce((n, c) => n + c.truth.length, 0)
  console.log(`MTCNN detection, ${count} photos of ${WIDTH}×${HEIGHT} (${pasted} pasted faces), device ${device} (${cpus()[0]?.model ?? 'unknown CPU'})`)
  console.log('threads  batch   ours photos/s   facenet-pytorch photos/s   ours/facenet-pytorch   faces ours / theirs')
  for (const threads of threadCounts) for (const batch of batches) {
    using detector = await FaceDetector.load({ device, threads })
    await ours(detector, all, batch, batch)
    const mine: number[] = []
    const theirs: number[] = []
    let facesOurs = 0
    let facesTheirs = 0
    for (let r = 0; r < rounds; r++) {
      const a = await ours(detector, all, count, batch)
      mine.push(a.rate)
      facesOurs = a.faces
      const out = execFileSync(python, [join(__dirname, 'detect.py'), raw, String(count), String(HEIGHT), String(WIDTH), String(threads), '1', String(batch), device === 'auto' ? 'cpu' : device], { encoding: 'utf8' })
      const b = JSON.parse(out.trim().split('\n').pop()!) as { photosPerSecond: number[]; faces: number }
      theirs.push(b.photosPerSecond[0]!)
      facesTheirs = b.faces
    }
    const a = median(mine)
    const b = median(theirs)
    console.log(`${String(threads).padStart(7)}${String(batch).padStart(7)}${a.toFixed(2).padStart(16)}${b.toFixed(2).padStart(27)}${(a / b).toFixed(2).padStart(23)}${`${facesOurs} / ${facesTheirs}`.padStart(22)}`)
  }
  rmSync(dir, { recursive: true, force: true })
}

void main()
