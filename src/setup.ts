/**
 * Provisions libtorch for a consumer of the package: PyPI's torch==2.11.0 in a venv under
 * the per-user cache, once per machine, reusing any install the load-time search finds.
 * `npm install facenet-torch` runs it (postinstall, never failing the install) and
 * `npx facenet setup` runs it on demand. Like `libtorch.ts`, it never loads the addon.
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SetupError } from './errors'
import { cacheRoot, findLibtorch, holdsOwnTorch, type LibtorchLocation, type SearchedPlace, setupStatusFile, TORCH_VERSION } from './libtorch'

/**
 * `cuda`: the full PyPI wheel with its CUDA 13 runtime (about 4.9 GB), for machines with
 * an NVIDIA GPU. `cpu`: the same wheel without its CUDA dependencies, plus the two small
 * CUDA runtime wheels libtorch_cpu links (about 0.7 GB). `auto`: `cuda` where a GPU is
 * visible, else `cpu`.
 */
export type TorchVariant = 'auto' | 'cuda' | 'cpu'
export const TORCH_VARIANTS = ['auto', 'cuda', 'cpu'] as const satisfies readonly TorchVariant[]

/** What libtorch_cpu.so links from the CUDA toolkit (pinned as torch 2.11.0's cuda-toolkit 13.0.2 pins them). */
const CPU_RUNTIME_WHEELS = ['nvidia-cuda-runtime==13.0.96', 'nvidia-cuda-cupti==13.0.85']
/** libtorch's CUDA half; a CPU-only install drops it, since its CUDA libraries are absent. */
const CUDA_ONLY_LIBRARIES = ['libtorch_cuda.so', 'libtorch_cuda_linalg.so', 'libc10_cuda.so', 'libtorch_nvshmem.so', 'libcaffe2_nvrtc.so']
/** Free space asked for before downloading (the install's size plus pip's temporary copy). */
const REQUIRED_BYTES: Record<'cuda' | 'cpu', number> = { cuda: 8e9, cpu: 2.5e9 }

export interface SetupOptions {
  /** Default `$FACENET_TORCH_VARIANT`, else `'auto'`. */
  variant?: TorchVariant
  /** Python ≥ 3.10 with `venv`. Default `$FACENET_TORCH_PYTHON`, else `python3`. */
  python?: string
  /** Folder the venv goes into. Default `$FACENET_TORCH_HOME`, else `~/.cache/facenet-torch`. */
  home?: string
  /** Install even when a usable torch is found. Default `false`. */
  force?: boolean
  /** Progress lines. Default: stderr. */
  log?: (line: string) => void
  /** Cancels the download (the partial venv is removed). */
  signal?: AbortSignal
  /** Environment searched and passed to pip. Default `process.env`. */
  env?: NodeJS.ProcessEnv
}

export interface SetupReport {
  /** `found`: an existing install is used; `installed`: this call installed one. */
  status: 'found' | 'installed'
  location: LibtorchLocation
  /** Where the search looked before it found (or did not find) an install. */
  searched: SearchedPlace[]
  /** The variant installed, or the one found (`cuda` when libtorch_cuda can load). */
  variant: 'cuda' | 'cpu'
  /** Whether an NVIDIA GPU is visible to this machine. */
  gpuVisible: boolean
  /** Seconds spent installing (0 when found). */
  seconds: number
}

/** Whether the NVIDIA driver is present (a GPU is visible to this machine). */
export function gpuVisible(): boolean {
  if (existsSync('/proc/driver/nvidia/version') || existsSync('/dev/nvidiactl')) return true
  const smi = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000 })
  return smi.status === 0 && /GPU \d/.test(smi.stdout)
}

function run(command: string, args: string[], options: { env: NodeJS.ProcessEnv; signal?: AbortSignal; log: (line: string) => void }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env, stdio: ['ignore', 'pipe', 'pipe'], signal: options.signal })
    let tail = ''
    const collect = (chunk: Buffer) => {
      const text = chunk.toString('utf8')
      tail = (tail + text).slice(-4000)
      for (const line of text.split('\n')) if (line.trim()) options.log(`  ${line.trimEnd()}`)
    }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    child.on('error', (error) => reject(error))
    child.on('close', (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited with ${signal ?? code}: ${tail.trim().split('\n').slice(-3).join(' | ')}`)),
    )
  })
}

function checkPython(python: string): string {
  const probe = spawnSync(python, ['-c', 'import sys, venv; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8', timeout: 30_000 })
  if (probe.error) {
    throw new SetupError(
      `cannot run ${python} (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message}); facenet-torch installs torch==${TORCH_VERSION} ` +
        'from PyPI with Python ≥ 3.10 and its venv module. Install Python 3 (e.g. apt-get install python3 python3-venv), or set FACENET_TORCH_PYTHON, ' +
        'or set FACENET_TORCH_HOME to an existing torch 2.11.0, then run: npx facenet setup',
    )
  }
  const version = probe.stdout.trim()
  const [major, minor] = version.split('.').map(Number)
  if (probe.status !== 0 || major !== 3 || minor! < 10) {
    throw new SetupError(`${python} is Python ${version || '(unknown)'} without a usable venv module (${probe.stderr.trim().split('\n').pop() ?? ''}); torch ${TORCH_VERSION} needs Python ≥ 3.10 with venv`)
  }
  return version
}

function checkDisk(home: string, variant: 'cuda' | 'cpu'): void {
  const stats = statfsSync(home)
  const free = stats.bavail * stats.bsize
  if (free < REQUIRED_BYTES[variant]) {
    throw new SetupError(
      `not enough disk space in ${home}: ${(free / 1e9).toFixed(1)} GB free, the ${variant} install of torch ${TORCH_VERSION} needs about ` +
        `${(REQUIRED_BYTES[variant] / 1e9).toFixed(1)} GB while it installs. Free some space or set FACENET_TORCH_HOME to another disk` +
        (variant === 'cuda' ? ", or install the CPU-only variant (FACENET_TORCH_VARIANT=cpu, about 0.7 GB)" : ''),
    )
  }
}

/**
 * Finds a usable torch 2.11.0 (see `libtorch.ts` for the order) or installs one into
 * `home/torch-2.11.0` (`cuda`) or `home/torch-2.11.0-cpu` (`cpu`). Rejects with
 * {@link SetupError} (`ERR_LIBTORCH`) and a message saying what to do; an interrupted or
 * failed install leaves nothing that a later search would take for complete.
 */
export async function setupLibtorch(options: SetupOptions = {}): Promise<SetupReport> {
  const env = options.env ?? process.env
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const requested = options.variant ?? (env.FACENET_TORCH_VARIANT as TorchVariant | undefined) ?? 'auto'
  if (!TORCH_VARIANTS.includes(requested)) {
    throw new SetupError(`FACENET_TORCH_VARIANT must be one of ${TORCH_VARIANTS.join(', ')}, got ${JSON.stringify(requested)}`)
  }
  const gpu = gpuVisible()
  const variant = requested === 'auto' ? (gpu ? 'cuda' : 'cpu') : requested
  const { location, searched } = findLibtorch(env)
  // A CPU-only install found on a machine that asked for CUDA explicitly is not enough.
  if (location && !options.force && !(requested === 'cuda' && !location.cudaInstalled)) {
    return { status: 'found', location, searched, variant: location.cudaInstalled ? 'cuda' : 'cpu', gpuVisible: gpu, seconds: 0 }
  }

  const home = options.home ?? env.FACENET_TORCH_HOME ?? cacheRoot(env)
  if (!options.home && env.FACENET_TORCH_HOME && holdsOwnTorch(env.FACENET_TORCH_HOME)) {
    throw new SetupError(
      `FACENET_TORCH_HOME=${env.FACENET_TORCH_HOME} is a torch install of its own (${searched.map((s) => s.result).join('; ')}); ` +
        `setup does not install into it. Point FACENET_TORCH_HOME at a torch ${TORCH_VERSION} or an empty folder, or unset it to install into ${cacheRoot(env)}`,
    )
  }
  const venv = join(home, variant === 'cuda' ? `torch-${TORCH_VERSION}` : `torch-${TORCH_VERSION}-cpu`)
  const python = options.python ?? env.FACENET_TORCH_PYTHON ?? 'python3'
  const started = Date.now()
  try {
    mkdirSync(home, { recursive: true })
    const pythonVersion = checkPython(python)
    checkDisk(home, variant)
    log(
      `facenet-torch: installing torch==${TORCH_VERSION} (${variant === 'cuda' ? 'with its CUDA 13 runtime, about 4.9 GB' : 'CPU only, about 0.7 GB'}) ` +
        `from PyPI into ${venv} with Python ${pythonVersion}; once per machine`,
    )
    const partial = `${venv}.partial-${process.pid}`
    rmSync(partial, { recursive: true, force: true })
    try {
      await run(python, ['-m', 'venv', partial], { env, signal: options.signal, log })
      const pip = [join(partial, 'bin', 'python'), '-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off']
      const packages = variant === 'cuda' ? [`torch==${TORCH_VERSION}`] : ['--no-deps', `torch==${TORCH_VERSION}`, ...CPU_RUNTIME_WHEELS]
      await run(pip[0]!, [...pip.slice(1), ...packages], { env, signal: options.signal, log })
      if (variant === 'cpu') {
        const torchLib = findLibtorch({ FACENET_TORCH_HOME: partial, HOME: '/nonexistent', FACENET_TORCH_PYTHON: '/nonexistent' }).location?.torchDir
        for (const name of CUDA_ONLY_LIBRARIES) if (torchLib) rmSync(join(torchLib, 'lib', name), { force: true })
      }
      rmSync(venv, { recursive: true, force: true })
      renameSync(partial, venv)
      // Rewrites the venv's own paths (scripts, pyvenv.cfg) for its final name.
      await run(python, ['-m', 'venv', '--upgrade', venv], { env, signal: options.signal, log: () => {} })
      writeFileSync(join(venv, '.complete'), `${variant}\n`)
    } catch (error) {
      rmSync(partial, { recursive: true, force: true })
      throw error
    }
    const found = findLibtorch({ ...env, FACENET_TORCH_HOME: venv })
    if (!found.location) throw new SetupError(`installed ${venv}, but no torch ${TORCH_VERSION} is in it: ${JSON.stringify(found.searched)}`)
    writeFileSync(setupStatusFile(home), JSON.stringify({ ok: true, at: new Date().toISOString(), venv, variant }) + '\n')
    // Found here through the venv's own path, but the load-time search reaches it through the cache unless FACENET_TORCH_HOME names its folder.
    const source = env.FACENET_TORCH_HOME && home === env.FACENET_TORCH_HOME ? 'FACENET_TORCH_HOME' : home === cacheRoot(env) ? 'cache' : found.location.source
    return { status: 'installed', location: { ...found.location, source }, searched, variant, gpuVisible: gpu, seconds: (Date.now() - started) / 1000 }
  } catch (error) {
    const setupError =
      error instanceof SetupError
        ? error
        : new SetupError(
            `installing torch==${TORCH_VERSION} into ${venv} failed: ${(error as Error).message}. ` +
              'Check the network (PyPI) and the disk, then run: npx facenet setup',
            { cause: error },
          )
    try {
      writeFileSync(setupStatusFile(home), JSON.stringify({ ok: false, at: new Date().toISOString(), error: setupError.message }) + '\n')
    } catch {
      // the folder itself is unwritable; the message still reaches the caller
    }
    throw setupError
  }
}
