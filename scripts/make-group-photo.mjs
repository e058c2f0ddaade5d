// Builds the README's example: data/examples/group.jpg, five LFW faces (shipped in data/lfw)
// pasted at several sizes on a 640×480 background, and data/examples/gallery/, other photos of
// four of those people (one folder each) plus one person who is not in the group photo. The
// fifth face of the group (Hugo Chavez) has no gallery folder: identify names it unknown.
//   node scripts/make-group-photo.mjs
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import sharp from 'sharp'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const lfw = (file) => join(root, 'data', 'lfw', file.split('_').slice(0, -1).join('_'), file)
const faces = [
  ['George_W_Bush_0007.jpg', 30, 60, 220],
  ['Serena_Williams_0001.jpg', 270, 40, 160],
  ['Colin_Powell_0040.jpg', 450, 120, 110],
  ['Tony_Blair_0018.jpg', 300, 300, 80],
  ['Hugo_Chavez_0002.jpg', 500, 320, 60],
]
const gallery = ['George_W_Bush_0016.jpg', 'George_W_Bush_0065.jpg', 'Serena_Williams_0003.jpg', 'Colin_Powell_0049.jpg', 'Tony_Blair_0032.jpg', 'Jennifer_Aniston_0001.jpg']
const layers = await Promise.all(faces.map(async ([file, left, top, size]) => ({ input: await sharp(lfw(file)).resize(size, size).toBuffer(), left, top })))
await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 90, g: 110, b: 130 } } })
  .composite(layers)
  .jpeg({ quality: 90 })
  .toFile(join(root, 'data', 'examples', 'group.jpg'))
const out = join(root, 'data', 'examples', 'gallery')
rmSync(out, { recursive: true, force: true })
for (const file of gallery) {
  const person = file.split('_').slice(0, -1).join('_')
  mkdirSync(join(out, person), { recursive: true })
  copyFileSync(lfw(file), join(out, person, file))
}
