// The load-time search for libtorch (src/libtorch.ts), on fake installs: the order, the
// version check, and what the error says. The real load is covered by package.spec.ts.
import test from 'ava'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describeTorch, findLibtorch, isSupportedVersion, libtorchNotFound } from '../src/libtorch'

function fakeTorch(root: string, version: string): string {
  const torch = join(root, 'lib', 'python3.11', 'site-packages', 'torch')
  mkdirSync(join(torch, 'lib'), { recursive: true })
  writeFileSync(join(torch, 'lib', 'libtorch_cpu.so'), '')
  writeFileSync(join(torch, 'version.py'), `from typing import Optional\n__version__ = '${version}'\n`)
  return torch
}

const nowhere = { FACENET_TORCH_PYTHON: '/nonexistent/python3' }

test('versions: 2.11.0 and its local builds match, nothing else does', (t) => {
  for (const v of ['2.11.0', '2.11.0+cu130', '2.11.0+cpu']) t.true(isSupportedVersion(v), v)
  for (const v of ['2.11.1', '2.10.0', '2.11', '2.11.0a0']) t.false(isSupportedVersion(v), v)
})

test('FACENET_TORCH_HOME wins over the cache, and a venv of `facenet setup` layout is found under it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'facenet-lt-'))
  const home = join(dir, 'home')
  const cached = fakeTorch(join(home, '.cache', 'facenet-torch', 'torch-2.11.0'), '2.11.0+cu130')
  const chosen = fakeTorch(join(dir, 'mine', 'torch-2.11.0-cpu'), '2.11.0+cu130')
  t.is(findLibtorch({ ...nowhere, HOME: home }).location?.torchDir, cached)
  const found = findLibtorch({ ...nowhere, HOME: home, FACENET_TORCH_HOME: join(dir, 'mine') })
  t.is(found.location?.torchDir, chosen)
  t.is(found.location?.source, 'FACENET_TORCH_HOME')
  t.false(found.location?.cudaInstalled)
})

test('a torch of the wrong version is skipped and named, and the error says what to install', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'facenet-lt-'))
  fakeTorch(join(dir, 'old'), '2.10.0+cu128')
  const { location, searched } = findLibtorch({ ...nowhere, HOME: join(dir, 'empty'), FACENET_TORCH_HOME: join(dir, 'old') })
  t.is(location, undefined)
  t.true(searched.some((s) => s.place.startsWith('FACENET_TORCH_HOME') && /is torch 2\.10\.0\+cu128, not 2\.11\.0/.test(s.result)))
  const error = libtorchNotFound(searched, undefined, { HOME: join(dir, 'empty') })
  t.is(error.code, 'ERR_LIBTORCH')
  t.regex(error.message, /is torch 2\.10\.0\+cu128, not 2\.11\.0/)
  t.regex(error.message, /npx facenet setup/)
  // Without FACENET_TORCH_HOME the whole order is searched, the Python last.
  const unset = findLibtorch({ ...nowhere, HOME: join(dir, 'empty') })
  t.regex(libtorchNotFound(unset.searched, undefined, { HOME: join(dir, 'empty') }).message, /python \/nonexistent\/python3: .*not runnable/)
})

test('FACENET_TORCH_HOME set to a torch 2.10 is an error naming it, even with a torch 2.11 in the cache; its fix is not to install into that venv', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'facenet-lt-'))
  const home = join(dir, 'home')
  fakeTorch(join(home, '.cache', 'facenet-torch', 'torch-2.11.0'), '2.11.0+cu130')
  const venv = join(dir, 'my-venv')
  fakeTorch(venv, '2.10.0')
  const env = { ...nowhere, HOME: home, FACENET_TORCH_HOME: venv }
  const { location, searched } = findLibtorch(env)
  t.is(location, undefined, 'no silent fall back to the cache')
  t.false(searched.some((s) => s.place.startsWith('cache')), 'nothing after FACENET_TORCH_HOME was searched')
  const error = libtorchNotFound(searched, undefined, env)
  t.regex(error.message, new RegExp(`^FACENET_TORCH_HOME=${venv} holds no usable libtorch 2\\.11\\.0`))
  t.regex(error.message, /is torch 2\.10\.0, not 2\.11\.0/)
  t.regex(error.message, /Point FACENET_TORCH_HOME at a torch 2\.11\.0 install, or unset it: then npx facenet setup installs one into .*\.cache\/facenet-torch/)
  t.notRegex(error.message, new RegExp(`into ${venv}`))
  // An empty folder meant for `facenet setup` is where the install goes.
  const empty = libtorchNotFound(findLibtorch({ ...env, FACENET_TORCH_HOME: join(dir, 'fresh') }).searched, undefined, { ...env, FACENET_TORCH_HOME: join(dir, 'fresh') })
  t.regex(empty.message, /Install one into it with: {2}npx facenet setup/)
})

test('a CPU-only install is described without its wheel\'s +cu130 tag', (t) => {
  t.is(describeTorch({ version: '2.11.0+cu130', cudaInstalled: false }), 'torch 2.11.0 (CPU only)')
  t.is(describeTorch({ version: '2.11.0+cu130', cudaInstalled: true }), 'torch 2.11.0+cu130 (with CUDA)')
})
