// Builds data/examples/group.jpg: five LFW faces (shipped in data/lfw) pasted at several sizes
// on a 640×480 background, for the README's `facenet detect` example and its spec.
//   node scripts/make-group-photo.mjs
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import sharp from 'sharp'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const faces = [
  ['Aaron_Eckhart/Aaron_Eckhart_0001.jpg', 30, 60, 220],
  ['AJ_Lamas/AJ_Lamas_0001.jpg', 270, 40, 160],
  ['Aaron_Guiel/Aaron_Guiel_0001.jpg', 450, 120, 110],
  ['Aaron_Peirsol/Aaron_Peirsol_0001.jpg', 300, 300, 80],
  ['Aaron_Sorkin/Aaron_Sorkin_0001.jpg', 500, 320, 60],
]
const layers = await Promise.all(
  faces.map(async ([file, left, top, size]) => ({ input: await sharp(join(root, 'data', 'lfw', file)).resize(size, size).toBuffer(), left, top })),
)
await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 90, g: 110, b: 130 } } })
  .composite(layers)
  .jpeg({ quality: 90 })
  .toFile(join(root, 'data', 'examples', 'group.jpg'))
