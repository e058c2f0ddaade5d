// `npm run package`: builds exactly what a release publishes, into pkg/:
//   facenet-torch-<version>.tgz                 the TS API, the CLI and the napi loader
//   facenet-torch-linux-x64-gnu-<version>.tgz   the prebuilt addon (napi-rs's per-platform
//                                                package, an optional dependency of the first)
// The addon carries no absolute RPATH/RUNPATH: src/libtorch.ts finds libtorch at load time.
// `--no-build` packs what is already built; `--out DIR` writes elsewhere than pkg/.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const outAt = process.argv.indexOf('--out')
const out = outAt >= 0 ? resolve(process.argv[outAt + 1]) : join(root, 'pkg')
const platform = 'linux-x64-gnu'
const addonName = `facenet-torch.${platform}.node`

function run(command, args, cwd = root) {
  const result = spawnSync(command, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' })
  if (result.status !== 0) {
    console.error(`package: '${command} ${args.join(' ')}' failed (${result.error?.message ?? `exit ${result.status}`})`)
    process.exit(1)
  }
  return result.stdout
}

if (!process.argv.includes('--no-build')) run(process.execPath, [join(root, 'scripts', 'build.mjs')])
const addon = join(root, addonName)
if (!existsSync(addon)) {
  console.error(`package: ${addonName} is not built; run npm run build`)
  process.exit(1)
}

// A user's machine has none of this machine's paths: refuse to pack an addon that names one.
const dynamic = run('readelf', ['-d', addon])
const paths = [...dynamic.matchAll(/\((RPATH|RUNPATH)\)[^[]*\[([^\]]*)\]/g)].flatMap((m) => m[2].split(':').map((p) => ({ tag: m[1], path: p })))
const absolute = paths.filter(({ path }) => path && !path.startsWith('$ORIGIN'))
if (absolute.length > 0) {
  console.error(`package: ${addonName} carries absolute search paths: ${absolute.map(({ tag, path }) => `${tag} ${path}`).join(', ')}`)
  process.exit(1)
}

const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const stage = join(out, 'stage')
rmSync(out, { recursive: true, force: true })
mkdirSync(stage, { recursive: true })

// The platform package: napi-rs's npm/<platform>/package.json plus the addon.
const platformStage = join(stage, platform)
cpSync(join(root, 'npm', platform), platformStage, { recursive: true })
cpSync(addon, join(platformStage, addonName))
const platformManifest = JSON.parse(readFileSync(join(platformStage, 'package.json'), 'utf8'))
if (platformManifest.version !== manifest.version) {
  console.error(`package: npm/${platform}/package.json is version ${platformManifest.version}, package.json ${manifest.version} (run npx napi version)`)
  process.exit(1)
}

// The main package: its `files`, and a manifest that depends on the platform package and
// keeps only the scripts a consumer's install runs.
const mainStage = join(stage, 'main')
mkdirSync(mainStage)
for (const entry of ['README.md', 'LICENSE', ...manifest.files]) {
  if (entry.includes('*')) continue
  if (existsSync(join(root, entry))) cpSync(join(root, entry), join(mainStage, entry), { recursive: true })
}
const published = { ...manifest }
delete published.devDependencies
published.scripts = { postinstall: manifest.scripts.postinstall }
published.optionalDependencies = { [platformManifest.name]: manifest.version }
writeFileSync(join(mainStage, 'package.json'), JSON.stringify(published, null, 2) + '\n')

const tarballs = []
for (const dir of [mainStage, platformStage]) {
  const report = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', out], dir))
  for (const { filename, size, unpackedSize, entryCount } of report) {
    tarballs.push(join(out, filename))
    console.log(`${filename}: ${(size / 1e6).toFixed(1)} MB packed, ${(unpackedSize / 1e6).toFixed(1)} MB unpacked, ${entryCount} files`)
  }
}
rmSync(stage, { recursive: true, force: true })
writeFileSync(join(out, 'tarballs.json'), JSON.stringify(tarballs, null, 2) + '\n')
