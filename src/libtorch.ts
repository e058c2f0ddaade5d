/**
 * Finds libtorch when the module loads, not when the addon was built, and loads it before
 * the addon. The prebuilt `.node` carries no path of the machine that built it: its
 * `libtorch_cpu.so`/`libc10.so` NEEDED entries are resolved by soname against the copies
 * preloaded here, and `libtorch_cuda.so` is preloaded too when its CUDA libraries are
 * installed (its static initialisers register CUDA with libtorch_cpu).
 *
 * Search order (the first torch 2.11.0 found wins):
 *   1. `$FACENET_TORCH_HOME`: a torch install (a `torch/` package folder or a libtorch
 *      folder with `lib/libtorch_cpu.so`), a venv holding one, or a folder of
 *      `torch-2.11.0[-cpu]` venvs as `facenet setup` makes them. When it is set, nothing
 *      else is searched: a torch there of another version is an error naming it.
 *   2. The per-user cache that `facenet setup` and the build use:
 *      `${XDG_CACHE_HOME:-~/.cache}/facenet-torch/torch-2.11.0`, then `…/torch-2.11.0-cpu`.
 *   3. The torch package of an existing Python (`$FACENET_TORCH_PYTHON`, else `python3`),
 *      if its version is exactly 2.11.0.
 *
 * This file must not import the addon (it runs first) nor anything that does.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { constants, homedir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { LibtorchNotFoundError } from './errors'
import { isRegularFileSync, readRegularFileSync } from './regular-file'

/** The one torch release the addon is built for (tch 0.24). */
export const TORCH_VERSION = '2.11.0'

/** The command that provisions libtorch, named in every "not found" message. */
export const SETUP_COMMAND = 'npx facenet setup'

export type LibtorchSource = 'FACENET_TORCH_HOME' | 'cache' | 'python'

export interface LibtorchLocation {
  /** The folder holding `lib/libtorch_cpu.so` (a torch package or a libtorch folder). */
  torchDir: string
  /** As the install reports it, e.g. `2.11.0+cu130`. */
  version: string
  /** Which step of the search found it. */
  source: LibtorchSource
  /** Whether the install has libtorch_cuda and the CUDA libraries it needs. */
  cudaInstalled: boolean
}

export interface LoadedLibtorch extends LibtorchLocation {
  /** Whether libtorch_cuda was loaded (CUDA can then be used where a GPU is visible). */
  cudaLoaded: boolean
  /** Why libtorch_cuda was not loaded, when the install has one. */
  cudaError?: string
}

/** One place the search looked, and what it found there. */
export interface SearchedPlace {
  place: string
  result: string
}

/**
 * How an install reads to a user: the CPU variant is torch's `+cu130` wheel with its CUDA
 * half removed, so its version string alone would claim CUDA.
 */
export function describeTorch(location: Pick<LibtorchLocation, 'version' | 'cudaInstalled'>): string {
  return location.cudaInstalled ? `torch ${location.version} (with CUDA)` : `torch ${location.version.split('+')[0]} (CPU only)`
}

/** The per-user cache root (`FACENET_TORCH_HOME` is searched before it, not instead). */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME || join(env.HOME || homedir(), '.cache')
  return join(base, 'facenet-torch')
}

/** The venv folder names `facenet setup` installs into, full (CUDA) install first. */
export const VENV_NAMES = [`torch-${TORCH_VERSION}`, `torch-${TORCH_VERSION}-cpu`] as const

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

/** The torch version recorded in a torch package (`version.py`) or libtorch (`build-version`). */
export function readTorchVersion(torchDir: string): string | undefined {
  try {
    const source = readRegularFileSync(join(torchDir, 'version.py'), 'utf8')
    const match = /^__version__\s*=\s*['"]([^'"]+)['"]/m.exec(source)
    if (match) return match[1]
  } catch {
    // not a pip torch package; try libtorch's layout
  }
  try {
    return readRegularFileSync(join(torchDir, 'build-version'), 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** `2.11.0` and local builds of it (`2.11.0+cu130`, `2.11.0+cpu`) match. */
export function isSupportedVersion(version: string): boolean {
  return version === TORCH_VERSION || version.startsWith(`${TORCH_VERSION}+`)
}

/**
 * torch package folders a root may hold: itself, `torch/`, or a venv's site-packages. Only
 * a regular `libtorch_cpu.so` counts (dlopen of a FIFO would block the load for ever).
 */
function torchDirsUnder(root: string): string[] {
  const found: string[] = []
  if (isRegularFileSync(join(root, 'lib', 'libtorch_cpu.so'))) found.push(root)
  if (isRegularFileSync(join(root, 'torch', 'lib', 'libtorch_cpu.so'))) found.push(join(root, 'torch'))
  const lib = join(root, 'lib')
  if (isDir(lib)) {
    for (const entry of readdirSync(lib).filter((name) => /^python3\.\d+$/.test(name)).sort()) {
      const torch = join(lib, entry, 'site-packages', 'torch')
      if (isRegularFileSync(join(torch, 'lib', 'libtorch_cpu.so'))) found.push(torch)
    }
  }
  return found
}

/** Why a searched folder held no torch: missing, unreadable (e.g. another user's home), or just none in it. */
function whyNoTorch(root: string): string {
  try {
    statSync(root)
    return 'no torch install in it'
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? 'error'})`
  }
}

/** Whether `torchDir`'s libtorch_cuda can load: the wheel's CUDA libraries sit beside it. */
function hasCudaLibraries(torchDir: string): boolean {
  if (!isRegularFileSync(join(torchDir, 'lib', 'libtorch_cuda.so'))) return false
  // A pip install puts the nvidia-* wheels next to torch/; a libtorch folder bundles them.
  const nvidia = join(dirname(torchDir), 'nvidia')
  return isDir(nvidia) ? existsSync(join(nvidia, 'cudnn')) : basename(torchDir) !== 'torch'
}

/** Asks a Python where its torch package is, without importing it (milliseconds). */
function pythonTorchDir(python: string): { dir?: string; error?: string } {
  const probe = [
    'import importlib.util',
    's = importlib.util.find_spec("torch")',
    'print(s.submodule_search_locations[0] if s and s.submodule_search_locations else "")',
  ].join('\n')
  const result = spawnSync(python, ['-c', probe], { encoding: 'utf8', timeout: 20_000 })
  if (result.error) return { error: `${python} not runnable (${(result.error as NodeJS.ErrnoException).code ?? result.error.message})` }
  if (result.status !== 0) return { error: `${python} failed: ${result.stderr.trim().split('\n').pop() ?? ''}` }
  const dir = result.stdout.trim()
  return dir ? { dir } : { error: 'no torch module' }
}

/**
 * Looks for libtorch 2.11.0 in the documented order and returns the first match, or
 * `undefined` with every place looked at in `searched`. Loads nothing.
 */
export function findLibtorch(env: NodeJS.ProcessEnv = process.env): { location?: LibtorchLocation; searched: SearchedPlace[] } {
  const searched: SearchedPlace[] = []
  const consider = (torchDir: string, source: LibtorchSource, place: string): LibtorchLocation | undefined => {
    const version = readTorchVersion(torchDir)
    if (version === undefined) {
      searched.push({ place, result: `${torchDir} has no version.py or build-version` })
      return undefined
    }
    if (!isSupportedVersion(version)) {
      searched.push({ place, result: `${torchDir} is torch ${version}, not ${TORCH_VERSION}` })
      return undefined
    }
    return { torchDir, version, source, cudaInstalled: hasCudaLibraries(torchDir) }
  }
  const searchRoots = (roots: string[], source: LibtorchSource, label: string): LibtorchLocation | undefined => {
    for (const root of roots) {
      const dirs = torchDirsUnder(root)
      if (dirs.length === 0) searched.push({ place: `${label} ${root}`, result: whyNoTorch(root) })
      for (const dir of dirs) {
        const location = consider(dir, source, `${label} ${root}`)
        if (location) return location
      }
    }
    return undefined
  }

  const home = env.FACENET_TORCH_HOME
  if (home) {
    const found = searchRoots([home, ...VENV_NAMES.map((name) => join(home, name))], 'FACENET_TORCH_HOME', 'FACENET_TORCH_HOME')
    if (found) return { location: found, searched }
    // A variable the user set is a choice: a torch it cannot give is an error, never a
    // silent fall back to another torch.
    return { searched }
  } else {
    searched.push({ place: 'FACENET_TORCH_HOME', result: 'not set' })
  }

  const cache = cacheRoot(env)
  const cached = searchRoots(
    VENV_NAMES.map((name) => join(cache, name)),
    'cache',
    'cache',
  )
  if (cached) return { location: cached, searched }

  const python = env.FACENET_TORCH_PYTHON || 'python3'
  const probe = pythonTorchDir(python)
  if (probe.dir) {
    const location = isRegularFileSync(join(probe.dir, 'lib', 'libtorch_cpu.so'))
      ? consider(probe.dir, 'python', `python ${python}`)
      : (searched.push({ place: `python ${python}`, result: `${probe.dir} has no lib/libtorch_cpu.so` }), undefined)
    if (location) return { location, searched }
  } else {
    searched.push({ place: `python ${python}`, result: probe.error ?? 'no torch module' })
  }
  return { searched }
}

/** Where `facenet setup` records the outcome of its last run, for the load-time error. */
export function setupStatusFile(home: string): string {
  return join(home, 'setup-status.json')
}

/** The last recorded setup failure under `home`, if the last setup failed. */
export function lastSetupFailure(home: string): string | undefined {
  try {
    const status = JSON.parse(readRegularFileSync(setupStatusFile(home), 'utf8')) as { ok?: boolean; error?: string; at?: string }
    return status.ok === false && status.error ? `${status.error} (${status.at ?? 'earlier'})` : undefined
  } catch {
    return undefined
  }
}

/** Whether `home` is (or holds) a torch install of its own: the user's venv, not a folder for `facenet setup`. */
export function holdsOwnTorch(home: string): boolean {
  return torchDirsUnder(home).length > 0
}

/** The coded error for "no usable libtorch", naming every place searched. */
export function libtorchNotFound(searched: readonly SearchedPlace[], reason?: string, env: NodeJS.ProcessEnv = process.env): LibtorchNotFoundError {
  const home = env.FACENET_TORCH_HOME
  const failure = lastSetupFailure(home || cacheRoot(env))
  const fix = !home
    ? [`Install it (once per machine, into ${cacheRoot(env)}) with:  ${SETUP_COMMAND}`, `or point FACENET_TORCH_HOME at a folder holding torch ${TORCH_VERSION}.`]
    : holdsOwnTorch(home)
      ? // Installing into someone's own venv would be the wrong folder.
        [`Point FACENET_TORCH_HOME at a torch ${TORCH_VERSION} install, or unset it: then ${SETUP_COMMAND} installs one into ${cacheRoot(env)}.`]
      : [`Install one into it with:  ${SETUP_COMMAND}`, `or point FACENET_TORCH_HOME at a torch ${TORCH_VERSION} install, or unset it to use ${cacheRoot(env)}.`]
  const lines = [
    reason ??
      (home
        ? `FACENET_TORCH_HOME=${home} holds no usable libtorch ${TORCH_VERSION} (PyPI torch==${TORCH_VERSION}); it is set, so no other place was searched.`
        : `libtorch ${TORCH_VERSION} (PyPI torch==${TORCH_VERSION}) was not found.`),
    'facenet-torch looked in, in this order:',
    ...searched.map(({ place, result }) => `  - ${place}: ${result}`),
    ...fix,
    ...(failure ? [`The last setup failed: ${failure}`] : []),
  ]
  return new LibtorchNotFoundError(lines.join('\n'), searched)
}

// RTLD_NODELETE keeps a library mapped after Node's dlopen reports "did not self-register"
// and closes the handle; Node does not export its value, glibc's is 0x1000.
const PRELOAD_FLAGS = constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL | ((constants.dlopen as { RTLD_NODELETE?: number }).RTLD_NODELETE ?? 0x1000)

/** dlopen()s a plain shared library for its symbols; returns dlerror's text on failure. */
function preload(file: string): string | undefined {
  try {
    process.dlopen({ exports: {} }, file, PRELOAD_FLAGS)
    return undefined
  } catch (error) {
    const message = (error as Error).message
    // Loaded fine; it is just not a Node addon.
    return /did not self-register/.test(message) ? undefined : message
  }
}

let loaded: LoadedLibtorch | undefined

/**
 * Finds libtorch and loads it into the process (once). Throws
 * {@link LibtorchNotFoundError} (`ERR_LIBTORCH`) when none is found or it cannot load.
 * `FACENET_TORCH_CUDA=0` skips libtorch_cuda (a CPU-only process starts faster).
 */
export function loadLibtorch(env: NodeJS.ProcessEnv = process.env): LoadedLibtorch {
  if (loaded) return loaded
  const { location, searched } = findLibtorch(env)
  if (!location) throw libtorchNotFound(searched, undefined, env)
  const lib = join(location.torchDir, 'lib')
  for (const name of ['libc10.so', 'libtorch_cpu.so']) {
    const error = preload(join(lib, name))
    if (error) {
      throw libtorchNotFound(
        [...searched, { place: `${location.source} ${location.torchDir}`, result: `torch ${location.version}, but ${name} failed to load: ${error}` }],
        `libtorch ${location.version} was found at ${location.torchDir} but cannot be loaded.`,
        env,
      )
    }
  }
  let cudaLoaded = false
  let cudaError: string | undefined
  if (location.cudaInstalled && env.FACENET_TORCH_CUDA !== '0') {
    cudaError = preload(join(lib, 'libtorch_cuda.so'))
    cudaLoaded = cudaError === undefined
  } else if (location.cudaInstalled) {
    cudaError = 'skipped (FACENET_TORCH_CUDA=0)'
  }
  loaded = { ...location, cudaLoaded, ...(cudaError === undefined ? {} : { cudaError }) }
  return loaded
}

/** The libtorch this process loaded, if the addon has been loaded. */
export function loadedLibtorch(): LoadedLibtorch | undefined {
  return loaded
}
