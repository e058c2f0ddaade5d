import test from 'ava'
import { join } from 'node:path'
import { FaceDetector } from '../src'
import { BACKGROUNDS, type Box, composites, HEIGHT, iou, lfwPhotos, WIDTH } from './fixtures/composites'

const lfw = lfwPhotos(join(__dirname, '..', 'data', 'lfw'))

test('MTCNN finds ≥ 99% of pasted faces of 40 px and up at IoU 0.5, and nothing on faceless backgrounds', async (t) => {
  using detector = await FaceDetector.load({ threads: 1 })
  // The true box of a pasted face is where MTCNN puts it in its 150×150 LFW photo, which the
  // parity spec shows to be facenet-pytorch's box to within 0.001 px.
  const photos = await composites(lfw, 100, 19, async (photo) => {
    const [faces] = await detector.detectFiles([photo])
    return faces!.length === 1 ? (faces![0]!.box as Box) : undefined
  })
  let pasted = 0
  let found = 0
  let falseAlarms = 0
  const missed: string[] = []
  for (const [i, photo] of photos.entries()) {
    const [faces] = await detector.detect({ data: photo.data, shape: [1, HEIGHT, WIDTH, 3] })
    for (const truth of photo.truth.filter((b) => b[2] - b[0] >= 40)) {
      pasted++
      if (faces!.some((f) => iou(f.box, truth) >= 0.5)) found++
      else missed.push(`photo ${i} (${photo.background}): ${JSON.stringify(truth)}`)
    }
    // A detection outside every pasted patch is one on the background.
    falseAlarms += faces!.filter((f) => !photo.patches.some((b) => iou(f.box, b) > 0)).length
  }
  t.log(`${found}/${pasted} faces ≥ 40 px found (${((100 * found) / pasted).toFixed(1)}%), ${falseAlarms} detections on the backgrounds`)
  if (missed.length > 0) t.log(`missed: ${missed.join('; ')}`)
  t.true(pasted >= 100, `only ${pasted} faces of 40 px and up were pasted`)
  t.true(found >= 0.99 * pasted)
  t.is(falseAlarms, 0)
})

for (const background of BACKGROUNDS) {
  test(`MTCNN detects no face on ${background} backgrounds`, async (t) => {
    const photos = (await composites(lfw, 4 * BACKGROUNDS.length, 7)).filter((p) => p.background === background)
    using detector = await FaceDetector.load({ threads: 1 })
    const data = new Uint8Array(photos.length * HEIGHT * WIDTH * 3)
    photos.forEach((p, i) => data.set(p.data, i * HEIGHT * WIDTH * 3))
    const faces = await detector.detect({ data, shape: [photos.length, HEIGHT, WIDTH, 3] })
    t.is(faces.length, photos.length)
    t.deepEqual(faces, photos.map(() => []))
  })
}
