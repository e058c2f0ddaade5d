// `npm run smoke` (after `npm run package`): installs the packed tarballs into a new
// consumer project on what looks like a fresh machine, and uses them as a user would.
//
// - HOME is an empty folder; XDG_CACHE_HOME and FACENET_TORCH_* are unset.
// - As root, in a private mount namespace (unshare -m), the build's torch install is
//   bind-mounted at another path and a tmpfs hides the original: nothing can reach the path
//   the addon was built against. The consumer finds torch through FACENET_TORCH_HOME at the
//   new path, so nothing is downloaded again. Elsewhere it runs without the mount step.
// - In that project: `npm install` of both tarballs, `npx facenet info`, a TypeScript script
//   (type-checked, then run) that trains `tiny` for 3 steps on a few shipped LFW images and
//   embeds two of them, then `require('facenet-torch')` with no torch to be found (the coded
//   error), and the install-time setup failing without Python (the install still succeeds,
//   and the load-time error says why).
//
// Prints a transcript and writes a JSON summary (`--summary FILE`, default pkg/smoke.json).
// Exits non-zero when any step fails.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const argValue = (flag, fallback) => {
  const at = process.argv.indexOf(flag)
  return at >= 0 ? resolve(process.argv[at + 1]) : fallback
}
const pkgDir = argValue('--pkg', join(root, 'pkg'))
const summaryFile = argValue('--summary', join(pkgDir, 'smoke.json'))
const keep = process.argv.includes('--keep')

function fail(message) {
  console.error(`smoke: ${message}`)
  process.exit(1)
}

const tarballs = JSON.parse(readFileSync(join(pkgDir, 'tarballs.json'), 'utf8'))
if (tarballs.length !== 2 || !tarballs.every((file) => existsSync(file))) fail(`expected two tarballs in ${pkgDir}; run npm run package`)

// The build's torch install: the venv (or folder) to hide from the consumer.
const { findLibtorch } = await import(join(root, 'dist', 'libtorch.js'))
const { location } = findLibtorch()
if (!location) fail('no torch found for the build; run npm install first')
const venvMatch = /^(.*)\/lib\/python3\.\d+\/site-packages\/torch$/.exec(location.torchDir)
const buildTorch = realpathSync(venvMatch ? venvMatch[1] : location.torchDir)

const work = realpathSync(mkdtempSync(join(tmpdir(), 'facenet-smoke-')))
const app = join(work, 'app')
const home = join(work, 'home')
const mounted = join(work, 'torch-home')
for (const dir of [app, home, mounted]) mkdirSync(dir, { recursive: true })

// A few shipped identities with at least three images each.
const lfw = join(root, 'data', 'lfw')
const people = readdirSync(lfw)
  .filter((name) => !name.includes('.'))
  .sort()
  .filter((name) => readdirSync(join(lfw, name)).length >= 3)
  .slice(0, 4)
for (const person of people) {
  mkdirSync(join(app, 'faces', person), { recursive: true })
  for (const file of readdirSync(join(lfw, person)).sort().slice(0, 3)) cpSync(join(lfw, person, file), join(app, 'faces', person, file))
}

writeFileSync(
  join(app, 'train.ts'),
  `import { devices, embedFiles, FaceNet, ImageFolder, Trainer, type LossPhaseOptions, type StepResult } from 'facenet-torch'

async function main(): Promise<void> {
  const data = await ImageFolder.open('faces')
  const model = await FaceNet.create({ arch: 'tiny', seed: 1 })
  const trainer = new Trainer(model, { optimizer: 'adam', lr: 1e-3, identitiesPerBatch: 4, imagesPerIdentity: 2, centerCrop: 0.7 })
  const losses: number[] = []
  const result = await trainer.fit(data, { epochs: 10, maxSteps: 3, onStep: (s: StepResult) => void losses.push(s.loss) })
  // The classification losses through the public types: an ArcFace warm-up, then triplets.
  const loss: LossPhaseOptions[] = [{ type: 'arcface', margin: 0.3, scale: 30 }, { type: 'triplet', fromStep: 2 }]
  const arc = await FaceNet.create({ arch: 'tiny', seed: 1 })
  const classLosses: number[] = []
  await new Trainer(arc, { loss, batchSize: 8, identitiesPerBatch: 4, imagesPerIdentity: 2, centerCrop: 0.7 }).fit(data, { epochs: 10, maxSteps: 3, onStep: (s: StepResult) => void classLosses.push(s.classLoss) })
  arc.dispose()
  const [a, b] = [data.items[0]!.path, data.items[3]!.path]
  const rows = await embedFiles(model, [a, b], { centerCrop: 0.7 })
  const dim = model.embeddingDim
  let distance = 0
  for (let i = 0; i < dim; i++) distance += (rows[i]! - rows[dim + i]!) ** 2
  const norm = Math.hypot(...rows.subarray(0, dim))
  console.log(JSON.stringify({ steps: result.steps, stopped: result.stopped, losses, classLosses, dim, distance, norm, device: devices().libtorchPath }))
  model.dispose()
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
`,
)

const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
const tsx = join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs')
const probe = (label) =>
  `node -e "try { require('facenet-torch'); console.log(JSON.stringify({ loaded: true })) } catch (e) { console.log(JSON.stringify({ code: e.code, name: e.name, message: e.message, searched: e.searched })) }" > ${label}.json`
const npmCache = spawnSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).stdout.trim()

const canHide = process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0
const script = `set -euo pipefail
cd ${JSON.stringify(app)}
if [ "${canHide ? 1 : 0}" = 1 ]; then
  mount --make-rprivate /
  mkdir -p ${JSON.stringify(join(mounted, 'torch-2.11.0'))}
  mount --bind ${JSON.stringify(buildTorch)} ${JSON.stringify(join(mounted, 'torch-2.11.0'))}
  mount -t tmpfs tmpfs ${JSON.stringify(buildTorch)}
  echo "+ hid ${buildTorch} (tmpfs); torch bind-mounted at ${join(mounted, 'torch-2.11.0')}"
else
  ln -s ${JSON.stringify(buildTorch)} ${JSON.stringify(join(mounted, 'torch-2.11.0'))}
  echo "+ not root or no unshare: ${buildTorch} stays visible; FACENET_TORCH_HOME links to it"
fi
[ -z "$(ls -A ${JSON.stringify(buildTorch)})" ] || [ "${canHide ? 1 : 0}" = 0 ]
echo '{"name":"smoke-app","version":"1.0.0","private":true}' > package.json
echo "+ npm install ${tarballs.map((t) => t.split('/').pop()).join(' ')}"
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npm install --no-audit --no-fund --prefer-offline --foreground-scripts ${tarballs.map((t) => JSON.stringify(t)).join(' ')} > install.log 2>&1 || { cat install.log; exit 1; }
grep facenet-torch: install.log || true
echo "+ npx facenet info"
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npx --no-install facenet info | tee info.txt
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npx --no-install facenet info --json > info.json
echo "+ tsc --noEmit train.ts"
node ${JSON.stringify(tsc)} --noEmit --strict --target es2022 --module nodenext --moduleResolution nodenext --skipLibCheck --types node --typeRoots ${JSON.stringify(join(root, 'node_modules', '@types'))} train.ts
echo "+ tsx train.ts"
FACENET_TORCH_HOME=${JSON.stringify(mounted)} node ${JSON.stringify(tsx)} train.ts | tee train.json
echo "+ npx facenet detect (the shipped MTCNN weights, from the installed package)"
photo=$(ls faces/*/*.jpg | head -1)
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npx --no-install facenet detect "$photo" --draw drawn.png --json --threads 1 > detect.json
[ -s drawn.png ]
echo "+ npx facenet compare (no --model: the pretrained dlib-resnet-v1 shipped in the package)"
same=$(ls faces/*/*.jpg | head -2 | tr '\n' ' ')
other=$(ls faces/*/*.jpg | sed -n 4p)
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npx --no-install facenet compare $same --json --threads 1 > compare-same.json 2> compare.log
FACENET_TORCH_HOME=${JSON.stringify(mounted)} npx --no-install facenet compare $(echo $same | cut -d' ' -f1) "$other" --json --threads 1 > compare-other.json 2>> compare.log
cat compare.log compare-same.json compare-other.json
echo "+ readelf -d node_modules/facenet-torch-linux-x64-gnu/*.node"
readelf -d node_modules/facenet-torch-linux-x64-gnu/*.node | grep -E 'NEEDED|RPATH|RUNPATH' | tee readelf.txt
echo "+ require('facenet-torch') with no torch to find"
FACENET_TORCH_PYTHON=/nonexistent/python3 ${probe('missing')}
cat missing.json
echo "+ install-time setup without Python"
set +e
FACENET_TORCH_PYTHON=/nonexistent/python3 node node_modules/facenet-torch/scripts/postinstall.js 2> postinstall-fail.log
echo $? > postinstall-fail.rc
set -e
cat postinstall-fail.log
FACENET_TORCH_PYTHON=/nonexistent/python3 ${probe('missing-after-setup')}
find ${JSON.stringify(work)} -maxdepth 4 -name 'torch-2.11.0*' -not -path '*/torch-home/*' > downloads.txt || true
`
writeFileSync(join(work, 'smoke.sh'), script)
const env = { PATH: process.env.PATH, HOME: home, npm_config_cache: npmCache, TMPDIR: tmpdir(), LANG: 'C.UTF-8' }
console.log(`smoke: consumer project ${app}`)
const started = Date.now()
const result = spawnSync(canHide ? 'unshare' : 'bash', canHide ? ['-m', 'bash', join(work, 'smoke.sh')] : [join(work, 'smoke.sh')], { env, stdio: 'inherit' })
const seconds = (Date.now() - started) / 1000
if (result.status !== 0) fail(`the consumer script failed (exit ${result.status}); files in ${work}`)

const read = (name) => readFileSync(join(app, name), 'utf8')
const summary = {
  work,
  hidden: canHide,
  buildTorch,
  seconds,
  info: JSON.parse(read('info.json')),
  train: JSON.parse(read('train.json').trim().split('\n').pop()),
  detect: JSON.parse(read('detect.json')),
  compare: { same: JSON.parse(read('compare-same.json')), other: JSON.parse(read('compare-other.json')), log: read('compare.log') },
  readelf: read('readelf.txt'),
  missing: JSON.parse(read('missing.json')),
  postinstallFailRc: Number(read('postinstall-fail.rc').trim()),
  postinstallFailLog: read('postinstall-fail.log'),
  missingAfterSetup: JSON.parse(read('missing-after-setup.json')),
  installLog: read('install.log'),
  downloads: read('downloads.txt').trim().split('\n').filter(Boolean),
}
writeFileSync(summaryFile, JSON.stringify(summary, null, 2) + '\n')
console.log(`smoke: done in ${seconds.toFixed(0)} s; summary ${summaryFile}${keep ? `; files kept in ${work}` : ''}`)
if (!keep) spawnSync('rm', ['-rf', work])
