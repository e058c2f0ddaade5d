/**
 * `facenet setup`: finds or installs libtorch (torch==2.11.0 from PyPI) and says what it
 * found. It never loads the addon, so it works where nothing else can yet.
 */
import { z } from 'zod'
import { cacheRoot, describeTorch, findLibtorch, TORCH_VERSION } from '../libtorch'
import { setupLibtorch, TORCH_VARIANTS } from '../setup'
import { type CommandSpec, EXIT, parseCommand, printHelp, SUMMARIES } from './options'

const setupSchema = z.strictObject({
  variant: z.enum(TORCH_VARIANTS).default('auto'),
  python: z.string().min(1).optional(),
  force: z.boolean().default(false),
  check: z.boolean().default(false),
})

export const setupSpec: CommandSpec<typeof setupSchema> = {
  name: 'setup',
  summary: SUMMARIES.setup,
  usage: 'facenet setup [--variant auto|cuda|cpu] [--python PY] [--force] [--check]',
  flags: {
    variant: { kind: 'string', value: 'V', help: "'auto' (default: cuda where a GPU is visible, else cpu), 'cuda' (about 4.9 GB) or 'cpu' (about 0.7 GB)" },
    python: { kind: 'string', value: 'PY', help: 'Python ≥ 3.10 used to create the venv (default $FACENET_TORCH_PYTHON, else python3)' },
    force: { kind: 'boolean', help: 'install even when a usable torch is found' },
    check: { kind: 'boolean', help: 'only report what the load-time search finds; install nothing (exit 1 if none)' },
  },
  schema: setupSchema,
  notes: [
    `Search order: $FACENET_TORCH_HOME, then ${cacheRoot()}/torch-${TORCH_VERSION}[-cpu], then the torch of python3.`,
    `Installs into $FACENET_TORCH_HOME, else ${cacheRoot()}. FACENET_TORCH_SKIP_SETUP=1 skips the install-time run.`,
  ],
}

export async function setupCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(setupSpec, argv)
  if (parsed.help) return printHelp(setupSpec)
  const { variant, python, force, check } = parsed.options
  if (check) {
    const { location, searched } = findLibtorch()
    if (parsed.json) console.log(JSON.stringify({ found: location ?? null, searched }))
    else {
      for (const { place, result } of searched) console.log(`  ${place}: ${result}`)
      console.log(location ? `found ${describeTorch(location)} at ${location.torchDir} (via ${location.source})` : `no torch ${TORCH_VERSION} found`)
    }
    return location ? EXIT.ok : EXIT.failure
  }
  const report = await setupLibtorch({ variant, force, ...(python ? { python } : {}) })
  if (parsed.json) console.log(JSON.stringify(report))
  else {
    const { location } = report
    console.log(`${report.status === 'found' ? 'found' : `installed in ${report.seconds.toFixed(0)} s`}: ${describeTorch(location)} at ${location.torchDir} (via ${location.source})`)
    console.log(`variant ${report.variant}; libtorch_cuda ${location.cudaInstalled ? 'installed' : 'not installed'}; NVIDIA GPU ${report.gpuVisible ? 'visible' : 'not visible'}`)
    if (report.gpuVisible && !location.cudaInstalled) console.log("a GPU is visible but this install is CPU-only: 'facenet setup --variant cuda' adds the CUDA one")
  }
  return EXIT.ok
}
