#!/usr/bin/env node
// Converts dlib's public-domain face-recognition ResNet
// (`dlib_face_recognition_resnet_model_v1.dat` of PyPI's face-recognition-models 0.3.0) into
// the safetensors file the package ships, weights/dlib-resnet-v1/model.safetensors, with its
// licence (CC0) and the checksums of both files. The .dat is read by the library's own core
// (crates/facenet/src/dlib.rs): no dlib and no Python are needed, and nothing is unpickled.
//
//   npm run build && node scripts/convert-dlib-resnet.mjs [DAT]
//
// DAT defaults to the copy `npm install` caches (.libtorch/dlib-models). The output is
// committed; __test__/dlib.spec.ts checks it bit for bit against the .dat.
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const { FaceNet, ALIGNMENT_KEY } = createRequire(import.meta.url)(join(root, 'dist', 'index.js'))

const SOURCE_SHA256 = '55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30'
const dat = process.argv[2] ?? join(root, '.libtorch', 'dlib-models', 'dlib_face_recognition_resnet_model_v1.dat')
const out = join(root, 'weights', 'dlib-resnet-v1')
const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex')

if (sha256(dat) !== SOURCE_SHA256) {
  console.error(`${dat} is not dlib_face_recognition_resnet_model_v1.dat (sha256 ${SOURCE_SHA256})`)
  process.exit(1)
}
mkdirSync(out, { recursive: true })
const model = await FaceNet.load(dat, { device: 'cpu', threads: 1 })
await model.save(join(out, 'model.safetensors'), {
  metadata: {
    // The threshold, how it was chosen and from where, as `facenet eval` stores its own.
    ...model.metadata,
    [ALIGNMENT_KEY]: 'dlib',
    source: 'dlib_face_recognition_resnet_model_v1.dat (dlib, Davis E. King; PyPI face-recognition-models 0.3.0)',
    sourceSha256: SOURCE_SHA256,
    license: 'CC0-1.0 (public domain)',
  },
})
model.dispose()
copyFileSync(join(dirname(dat), 'LICENSE'), join(out, 'LICENSE'))
const digest = sha256(join(out, 'model.safetensors'))
writeFileSync(join(out, 'SHA256SUMS'), `${digest}  model.safetensors\n`)
writeFileSync(
  join(out, 'README.md'),
  `dlib's face-recognition ResNet (\`dlib_face_recognition_resnet_model_v1.dat\`, Davis E. King, from PyPI's
\`face-recognition-models\` 0.3.0), released by its author into the public domain (CC0 1.0 Universal; see
LICENSE). Converted to safetensors by \`scripts/convert-dlib-resnet.mjs\`, which reads the \`.dat\` with this
library's own reader (\`crates/facenet/src/dlib.rs\`); \`__test__/dlib.spec.ts\` checks the tensors bit for bit
against the \`.dat\` with an independent reader, and the embeddings against dlib's \`compute_face_descriptor\`.
Tensor names are \`dlib-resnet-v1\`'s (\`stem.conv.weight\`, \`units.3.affine1.scale\`, \`fc.weight\`, …); the header
carries dlib's threshold (squared L2 0.36, Euclidean 0.6) and the alignment the model expects (\`dlib\`).

| file | sha256 |
|---|---|
| \`model.safetensors\` (shipped; \`sha256sum -c SHA256SUMS\` in this folder) | \`${digest}\` |
| \`dlib_face_recognition_resnet_model_v1.dat\` (the source, 22,466,066 bytes, not shipped) | \`${SOURCE_SHA256}\` |
`,
)
console.log(`${join(out, 'model.safetensors')}: sha256 ${digest}`)
