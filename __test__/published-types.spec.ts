// The declarations the package publishes, compiled as a user's `tsc --strict` compiles them:
// without `skipLibCheck`, so an emitted `import("…")` that resolves to the wrong file inside
// the installed package (issue 28: `import("../..").BindingMineOptions`) fails here.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = join(__dirname, '..')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

/**
 * A consumer project whose `node_modules/facenet-torch` is laid out as the published package:
 * the root `index.d.ts` napi generates beside `dist/*.d.ts` emitted from src/ now.
 */
function consumerProject(): string {
  const work = mkdtempSync(join(tmpdir(), 'facenet-types-'))
  const pkg = join(work, 'app', 'node_modules', 'facenet-torch')
  mkdirSync(pkg, { recursive: true })
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--emitDeclarationOnly', '--declarationMap', 'false', '--sourceMap', 'false', '--outDir', join(pkg, 'dist')])
  copyFileSync(join(root, 'index.d.ts'), join(pkg, 'index.d.ts'))
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<string, unknown>
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: manifest.name, version: manifest.version, main: manifest.main, types: manifest.types }))
  // The package's own dependencies (sharp, zod …) and @types/node, as npm would install them.
  for (const entry of readdirSync(join(root, 'node_modules'))) {
    if (entry !== 'facenet-torch' && !entry.startsWith('.')) symlinkSync(join(root, 'node_modules', entry), join(work, 'app', 'node_modules', entry))
  }
  return join(work, 'app')
}

const consumer = `
import { FaceNet, Trainer, ImageFolder, FaceNetError, type StepResult, type TrainerOptions } from 'facenet-torch'

export async function main(): Promise<void> {
  const options: TrainerOptions = { optimizer: 'adam', lr: 1e-3, identitiesPerBatch: 2, imagesPerIdentity: 2 }
  const model = await FaceNet.create({ arch: 'tiny' })
  const data = await ImageFolder.open('faces')
  await new Trainer(model, options).fit(data, { maxSteps: 1, onStep: (s: StepResult) => console.log(s.loss) })
  model.dispose()
}
main().catch((e: unknown) => console.log(e instanceof FaceNetError ? e.code : e))
`

function typeCheck(app: string, file: string, moduleKind: 'nodenext' | 'commonjs'): string {
  const resolution = moduleKind === 'nodenext' ? 'nodenext' : 'node10'
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', moduleKind, '--moduleResolution', resolution, '--types', 'node', file], { cwd: app, encoding: 'utf8' })
    return ''
  } catch (error) {
    return String((error as { stdout?: string }).stdout ?? error)
  }
}

let app: string
test.before(() => {
  app = consumerProject()
})

test('the published .d.ts compile under tsc --strict without skipLibCheck, from an ES module (.mts, named imports) and from CommonJS (.cts and module commonjs)', (t) => {
  writeFileSync(join(app, 'esm.mts'), consumer)
  writeFileSync(join(app, 'cjs.cts'), consumer)
  writeFileSync(join(app, 'plain.ts'), consumer)
  t.is(typeCheck(app, 'esm.mts', 'nodenext'), '')
  t.is(typeCheck(app, 'cjs.cts', 'nodenext'), '')
  t.is(typeCheck(app, 'plain.ts', 'commonjs'), '')
})

test('no published declaration reaches into the package by a bare relative import of its root', (t) => {
  const dist = join(app, 'node_modules', 'facenet-torch', 'dist')
  const offenders: string[] = []
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.d.ts') && /import\("(\.\.\/)*\.\.?"\)/.test(readFileSync(path, 'utf8'))) offenders.push(path)
    }
  }
  walk(dist)
  t.deepEqual(offenders, [])
})
