// `npm install` (through "prepare") and `npm run build`: provision libtorch, build the
// native addon in release mode with napi-rs, regenerate the binding's enum lists from its
// index.d.ts, then compile the TypeScript API.
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const debug = process.argv.includes('--debug')

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' })
  if (result.status !== 0) {
    console.error(`facenet-torch build: '${command} ${args.join(' ')}' failed`)
    process.exit(result.status ?? 1)
  }
}

run('bash', [join(root, 'scripts', 'setup-libtorch.sh')])
run(process.execPath, [
  join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js'),
  'build',
  '--platform',
  ...(debug ? [] : ['--release']),
  '--manifest-path',
  'crates/facenet-node/Cargo.toml',
  '--output-dir',
  '.',
  '--js',
  'index.js',
  '--dts',
  'index.d.ts',
  // String enums as unions of their literals, which plain strings from TS satisfy (a
  // const enum would not).
  '--no-const-enum',
])
// src/binding-enums.ts, the option lists of src/options.ts, from the index.d.ts just written.
run(process.execPath, [join(root, 'scripts', 'binding-enums.mjs')])
run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'])
