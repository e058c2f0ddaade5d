// The packages a release publishes, installed and used in a consumer project on what looks
// like a fresh machine (scripts/smoke-package.mjs): empty HOME, and, as root, the build's
// torch hidden under a tmpfs and bind-mounted elsewhere.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = join(__dirname, '..')

interface Summary {
  hidden: boolean
  buildTorch: string
  info: { libtorch: string; devices: { libtorchPath: string; libtorchSource: string } }
  train: { steps: number; losses: number[]; classLosses: number[]; dim: number; distance: number; norm: number }
  detect: { file: string; faces: { score: number }[]; drawn: string }[]
  compare: { same: { same: boolean; distance: number; threshold: number }; other: { same: boolean; distance: number; threshold: number }; log: string }
  readelf: string
  missing: { code?: string; name?: string; message?: string; searched?: { place: string; result: string }[] }
  missingAfterSetup: { code?: string; message?: string }
  postinstallFailRc: number
  postinstallFailLog: string
  installLog: string
  downloads: string[]
}

let summary: Summary
test.before(() => {
  const pkg = mkdtempSync(join(tmpdir(), 'facenet-pkg-'))
  // The addon and dist/ are what `npm install` built; pack them as a release would.
  execFileSync(process.execPath, [join(root, 'scripts', 'package.mjs'), '--no-build', '--out', pkg], { cwd: root, stdio: 'inherit' })
  const file = join(pkg, 'smoke.json')
  execFileSync(process.execPath, [join(root, 'scripts', 'smoke-package.mjs'), '--pkg', pkg, '--summary', file], { cwd: root, stdio: 'inherit' })
  summary = JSON.parse(readFileSync(file, 'utf8')) as Summary
})

test('the packed addon names no absolute library path', (t) => {
  t.notRegex(summary.readelf, /RPATH|RUNPATH/)
  t.regex(summary.readelf, /NEEDED.*\[libtorch_cpu\.so\]/)
})

test('the consumer finds torch through FACENET_TORCH_HOME, not the path it was built against', (t) => {
  t.regex(summary.info.libtorch, /^2\.11\.0/)
  t.is(summary.info.devices.libtorchSource, 'FACENET_TORCH_HOME')
  t.false(summary.info.devices.libtorchPath.startsWith(summary.buildTorch))
  if (process.getuid?.() === 0) t.true(summary.hidden, 'as root the build torch is hidden by a tmpfs')
  // The install-time setup found the mounted copy and downloaded nothing.
  t.regex(summary.installLog, /facenet-torch: using torch 2\.11\.0/)
  t.deepEqual(summary.downloads, [])
})

test('a TypeScript consumer trains tiny for 3 steps (and 3 with an ArcFace warm-up, then triplets) and embeds two images; facenet detect finds a face with the packaged MTCNN weights', (t) => {
  t.is(summary.train.steps, 3)
  t.is(summary.train.losses.length, 3)
  t.true(summary.train.losses.every(Number.isFinite))
  // Two ArcFace steps, then one triplet step (whose classification loss is 0).
  t.is(summary.train.classLosses.length, 3)
  t.true(summary.train.classLosses[0]! > 0 && summary.train.classLosses[1]! > 0 && summary.train.classLosses[2] === 0)
  t.is(summary.train.dim, 128)
  t.true(Math.abs(summary.train.norm - 1) < 1e-4)
  t.true(Number.isFinite(summary.train.distance))
  // MTCNN's weights come from the installed package (its files list), and --draw wrote the PNG.
  t.is(summary.detect.length, 1)
  t.is(summary.detect[0]!.faces.length, 1)
  t.true(summary.detect[0]!.faces[0]!.score > 0.99)
})

test('facenet compare with no --model uses the pretrained model shipped in the package: one person is the same, two people are not', (t) => {
  const { same, other, log } = summary.compare
  t.regex(log, /model: the pretrained dlib-resnet-v1/)
  t.is(same.threshold, 0.36)
  t.true(same.same, JSON.stringify(same))
  t.false(other.same, JSON.stringify(other))
})

test("require('facenet-torch') without torch throws ERR_LIBTORCH naming the places searched", (t) => {
  const { missing } = summary
  t.is(missing.code, 'ERR_LIBTORCH')
  t.is(missing.name, 'LibtorchNotFoundError')
  t.regex(missing.message!, /torch==2\.11\.0/)
  t.regex(missing.message!, /npx facenet setup/)
  t.deepEqual(
    missing.searched!.map((s) => s.place.split(' ')[0]),
    ['FACENET_TORCH_HOME', 'cache', 'cache', 'python'],
  )
  t.notRegex(missing.message!, /optional dependencies|Cannot find native binding/)
})

test('a failed install-time setup leaves the package installed and is named by the load error', (t) => {
  t.is(summary.postinstallFailRc, 0)
  t.regex(summary.postinstallFailLog, /cannot run \/nonexistent\/python3/)
  t.regex(summary.postinstallFailLog, /npx facenet setup/)
  t.is(summary.missingAfterSetup.code, 'ERR_LIBTORCH')
  t.regex(summary.missingAfterSetup.message!, /The last setup failed: cannot run \/nonexistent\/python3/)
})
