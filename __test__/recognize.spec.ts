/**
 * Photo in, identities out, with the shipped pretrained model and no training: findFaces,
 * FaceGallery, and the CLI's compare / identify / embed / cluster without --model.
 */
import test from 'ava'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import sharp from 'sharp'
import { FaceGallery, FaceNet, findFaces, InvalidArgumentError, ShapeError } from '../src'
import { startCli } from './helpers'

const root = join(__dirname, '..')
const examples = join(root, 'data', 'examples')
const lfw = (file: string): string => join(root, 'data', 'lfw', file.split('_').slice(0, -1).join('_'), file)
const dir = mkdtempSync(join(tmpdir(), 'facenet-recognize-'))

test.after.always(() => rmSync(dir, { recursive: true, force: true }))

function byLeftEdge<T extends { box: readonly number[] }>(faces: readonly T[]): T[] {
  return [...faces].sort((a, b) => a.box[0]! - b.box[0]! || a.box[1]! - b.box[1]!)
}

test('findFaces + FaceGallery name the four known faces of the group photo and call the fifth unknown', async (t) => {
  using model = await FaceNet.pretrained('dlib-resnet-v1', { threads: 1 })
  const { gallery, noFace } = await FaceGallery.fromFolder(model, join(examples, 'gallery'))
  t.deepEqual(noFace, [])
  t.is(gallery.threshold, 0.36)
  t.deepEqual(gallery.identities, ['Colin_Powell', 'George_W_Bush', 'Jennifer_Aniston', 'Serena_Williams', 'Tony_Blair'])
  const [faces] = await findFaces(model, [join(examples, 'group.jpg')])
  t.is(faces!.length, 5)
  const names = byLeftEdge(faces!).map((face) => {
    t.is(face.embedding.length, 128)
    t.true(face.score > 0.9)
    t.is(face.landmarks.length, 5)
    return gallery.identify(face.embedding).identity
  })
  // Left to right: Bush (x 30), Serena (270), Tony Blair (300, lower), Colin Powell (450), Chavez (500).
  t.deepEqual(names, ['George_W_Bush', 'Serena_Williams', 'Tony_Blair', 'Colin_Powell', null])
  // Bad input is coded.
  t.throws(() => gallery.identify(new Float32Array(3)), { instanceOf: ShapeError })
  t.throws(() => gallery.identify(faces![0]!.embedding, { threshold: -1 }), { instanceOf: InvalidArgumentError })
  await t.throwsAsync(findFaces(model, 'group.jpg' as unknown as string[]), { instanceOf: InvalidArgumentError })
})

test('a gallery needs a threshold when the model stores none', async (t) => {
  using model = await FaceNet.create({ arch: 'tiny', threads: 1 })
  await t.throwsAsync(FaceGallery.fromFolder(model, join(examples, 'gallery')), { instanceOf: InvalidArgumentError, message: /no stored threshold/ })
})

test.serial('the CLI with no --model uses the pretrained model on raw photos, and says so', async (t) => {
  const same = await startCli(['compare', lfw('George_W_Bush_0016.jpg'), lfw('George_W_Bush_0065.jpg'), '--threads', '2']).done
  t.is(same.code, 0, same.stderr)
  t.regex(same.stderr, /model: the pretrained dlib-resnet-v1/)
  t.regex(same.stdout, /threshold 0\.3600\): same person/)
  const other = await startCli(['compare', lfw('George_W_Bush_0016.jpg'), lfw('Serena_Williams_0003.jpg'), '--json', '--threads', '2']).done
  t.is(other.code, 0, other.stderr)
  const verdict = JSON.parse(other.stdout) as { same: boolean; distance: number; threshold: number }
  t.false(verdict.same)
  t.true(verdict.distance > verdict.threshold)

  const drawn = join(dir, 'group.png')
  const identify = await startCli(['identify', '--gallery', join(examples, 'gallery'), join(examples, 'group.jpg'), '--draw', drawn, '--json', '--threads', '2']).done
  t.is(identify.code, 0, identify.stderr)
  const result = JSON.parse(identify.stdout) as { photos: { faces: { identity: string | null; box: number[] }[] }[] }
  t.deepEqual(
    byLeftEdge(result.photos[0]!.faces).map((f) => f.identity),
    ['George_W_Bush', 'Serena_Williams', 'Tony_Blair', 'Colin_Powell', null],
  )
  t.true(statSync(drawn).size > 0)
  t.deepEqual(await sharp(drawn).metadata().then((m) => [m.width, m.height]), [640, 480])

  const embedded = await startCli(['embed', lfw('Tony_Blair_0018.jpg'), '--threads', '2']).done
  t.is(embedded.code, 0, embedded.stderr)
  const body = JSON.parse(embedded.stdout) as { dim: number; embeddings: number[][] }
  t.is(body.dim, 128)
  // Raw dlib descriptors, not unit vectors.
  t.true(Math.hypot(...body.embeddings[0]!) > 1.2)

  const clustered = await startCli(['cluster', join(examples, 'gallery'), '--json', '--threads', '2']).done
  t.is(clustered.code, 0, clustered.stderr)
  const clusters = JSON.parse(clustered.stdout) as { clusters: string[][]; scores: { purity: number } }
  t.is(clusters.clusters.length, 5)
  t.is(clusters.scores.purity, 1)
})
