#!/usr/bin/env node
/**
 * The `facenet` command line: a thin layer over the library's TypeScript API.
 * `facenet --help` lists the commands; `facenet COMMAND --help` their options.
 */
import { FaceNetError } from '../errors'
import { EXIT, SUMMARIES, UsageError, version } from './options'

type Run = (argv: string[]) => Promise<number>

// Each command's module is loaded only when it runs: `--help` and usage errors stay fast,
// and `info` does not pull in the report renderer.
const COMMANDS: Record<keyof typeof SUMMARIES, () => Promise<Run>> = {
  train: async () => (await import('./train')).train,
  eval: async () => (await import('./eval')).evalCommand,
  embed: async () => (await import('./use')).embedCommand,
  compare: async () => (await import('./use')).compareCommand,
  identify: async () => (await import('./use')).identifyCommand,
  cluster: async () => (await import('./use')).clusterCommand,
  info: async () => (await import('./use')).infoCommand,
  setup: async () => (await import('./setup')).setupCommand,
  pack: async () => (await import('./pack')).packCommand,
  align: async () => (await import('./align')).alignCommand,
  detect: async () => (await import('./detect')).detectCommand,
  convert: async () => (await import('./convert')).convertCommand,
}

function usage(): string {
  const width = Math.max(...Object.keys(SUMMARIES).map((c) => c.length)) + 2
  return [
    `facenet ${version()}: train, evaluate and run FaceNet face-embedding models`,
    '',
    'usage: facenet COMMAND [options]    (facenet COMMAND --help for its options)',
    '',
    'commands:',
    ...Object.entries(SUMMARIES).map(([name, summary]) => `  ${name.padEnd(width)}${summary}`),
    '',
    'Every command takes --config FILE (JSON options; flags win), --json and --help.',
    '',
    'exit codes:',
    `  ${EXIT.ok}    success`,
    `  ${EXIT.failure}    the work failed (unreadable data or weights, libtorch error, …)`,
    `  ${EXIT.usage}    usage error: unknown command or flag, bad value, bad config key`,
    `  ${EXIT.interrupted}  interrupted (Ctrl-C); 'train' writes a checkpoint first`,
    `  129, 143  'train' stopped by SIGHUP, SIGTERM: as Ctrl-C (128 + the signal's number)`,
    '',
  ].join('\n')
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return name === undefined ? EXIT.usage : EXIT.ok
  }
  if (name === '--version' || name === '-v') {
    console.log(version())
    return EXIT.ok
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name as keyof typeof COMMANDS] : undefined
  if (!load) {
    process.stderr.write(`facenet: unknown command ${JSON.stringify(name)}; commands: ${Object.keys(COMMANDS).join(', ')}\n`)
    return EXIT.usage
  }
  try {
    return await (await load())(rest)
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`facenet ${name}: ${error.message}\n(see 'facenet ${name} --help')\n`)
      return EXIT.usage
    }
    if (error instanceof FaceNetError) {
      process.stderr.write(`facenet ${name}: ${error.message} [${error.code}]\n`)
      // A folder another run holds is a question of how the command was called, as is a bad flag.
      return error.code === 'ERR_BUSY' ? EXIT.usage : EXIT.failure
    }
    // A filesystem error no command mapped (EACCES, ENOSPC, …): its message names the path.
    const code = (error as NodeJS.ErrnoException)?.code
    if (typeof code === 'string' && /^(ERR_FS_)?E[A-Z]+$/.test(code)) {
      process.stderr.write(`facenet ${name}: ${(error as Error).message}\n`)
      return EXIT.failure
    }
    process.stderr.write(`facenet ${name}: ${(error as Error)?.stack ?? String(error)}\n`)
    return EXIT.failure
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (error: unknown) => {
      process.stderr.write(`facenet: ${(error as Error)?.stack ?? String(error)}\n`)
      process.exitCode = EXIT.failure
    },
  )
}
