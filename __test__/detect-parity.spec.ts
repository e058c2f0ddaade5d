import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FaceDetector } from '../src'

const root = join(__dirname, '..')
const python = readFileSync(join(root, '.libtorch', 'python'), 'utf8').trim()
const lfw = join(root, 'data', 'lfw')

function lfwFiles(): string[] {
  const all = readdirSync(lfw)
    .filter((d) => statSync(join(lfw, d)).isDirectory())
    .flatMap((d) => readdirSync(join(lfw, d)).filter((f) => f.endsWith('.jpg')).map((f) => join(lfw, d, f)))
    .sort()
  const step = Math.max(1, Math.floor(all.length / 200))
  return all.filter((_, i) => i % step === 0).slice(0, 200)
}

function iou(a: readonly number[], b: readonly number[]): number {
  const w = Math.max(0, Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!))
  const h = Math.max(0, Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!))
  const area = (r: readonly number[]) => (r[2]! - r[0]!) * (r[3]! - r[1]!)
  return (w * h) / (area(a) + area(b) - w * h)
}

interface Ref { h: number; w: number; faces: number[][]; truth: number[][] | null }

test('MTCNN, batched, matches facenet-pytorch 2.6.0 within 1 px / 1e-3 on 200 LFW images and composites', async (t) => {
  const files = lfwFiles()
  t.is(files.length, 200)
  const raw = join(mkdtempSync(join(tmpdir(), 'mtcnn-')), 'images.rgb')
  const refs = JSON.parse(
    execFileSync(python, [join(__dirname, 'fixtures', 'mtcnn_reference.py')], {
      input: JSON.stringify({ files, composites: 12, raw }),
      maxBuffer: 1 << 28,
    }).toString(),
  ) as Ref[]
  const bytes = readFileSync(raw)
  const detector = await FaceDetector.load({ threads: 2 })
  let offset = 0
  let worstPx = 0
  let worstP = 0
  let faces = 0
  let pasted = 0
  let found = 0
  // Equal-size images go in as one batch (the LFW photos, then the composites), so the batched
  // path is what is compared; the other specs detect one photo per call.
  const detected: Awaited<ReturnType<FaceDetector['detect']>> = []
  for (let i = 0; i < refs.length; ) {
    let j = i
    while (j < refs.length && refs[j]!.h === refs[i]!.h && refs[j]!.w === refs[i]!.w) j++
    const size = refs[i]!.h * refs[i]!.w * 3
    const data = new Uint8Array(bytes.buffer, bytes.byteOffset + offset, size * (j - i))
    offset += size * (j - i)
    detected.push(...(await detector.detect({ data, shape: [j - i, refs[i]!.h, refs[i]!.w, 3] })))
    i = j
  }
  for (const [i, ref] of refs.entries()) {
    const ours = detected[i]
    t.is(ours!.length, ref.faces.length, `image ${i}: face count`)
    if (ref.truth) {
      if (ref.truth.length === 0) t.is(ours!.length, 0, `image ${i}: a plain background has no faces`)
      for (const b of ref.truth.filter((b) => b[2]! - b[0]! >= 40)) {
        pasted++
        if (ours!.some((f) => iou(f.box, b) >= 0.5)) found++
      }
    }
    // Faces with equal scores (both ≈ 1) may come in either order: match each to the nearest.
    for (const face of ours!) {
      const mine = [...face.box, face.score, ...face.landmarks.flat()]
      const distance = (r: number[]) => Math.max(...[0, 1, 2, 3].map((j) => Math.abs(mine[j]! - r[j]!)))
      const r = ref.faces.reduce((best, c) => (distance(c) < distance(best) ? c : best))
      for (const j of [0, 1, 2, 3, ...Array.from({ length: 10 }, (_, q) => 5 + q)]) worstPx = Math.max(worstPx, Math.abs(mine[j]! - r[j]!))
      worstP = Math.max(worstP, Math.abs(face.score - r[4]!))
      faces++
      if (process.env.MTCNN_DEBUG && distance(r) > 1) t.log(i, JSON.stringify(mine.slice(0, 5)), JSON.stringify(r.slice(0, 5)))
    }
  }
  detector.dispose()
  t.log(`${refs.length} images, ${faces} faces: worst box/landmark error ${worstPx.toFixed(5)} px, worst probability error ${worstP.toExponential(2)}`)
  t.log(`composites: ${found}/${pasted} pasted faces ≥ 40 px found at IoU ≥ 0.5`)
  t.true(found >= 0.99 * pasted)
  t.true(worstPx <= 1)
  t.true(worstP <= 1e-3)
})
