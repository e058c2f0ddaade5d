#!/usr/bin/env node
/**
 * The `facenet` command line: a thin layer over the library's TypeScript API.
 * `facenet --help` lists the commands; `facenet COMMAND --help` their options.
 */
import { FaceNetError } from '../errors'
import { evalCommand, evalSpec } from './eval'
import { EXIT, UsageError } from './options'
import { train, trainSpec } from './train'
import {
  clusterCommand,
  clusterSpec,
  compareCommand,
  compareSpec,
  embedCommand,
  embedSpec,
  identifyCommand,
  identifySpec,
  infoCommand,
  infoSpec,
  version,
} from './use'

const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  train: { summary: trainSpec.summary, run: train },
  eval: { summary: evalSpec.summary, run: evalCommand },
  embed: { summary: embedSpec.summary, run: embedCommand },
  compare: { summary: compareSpec.summary, run: compareCommand },
  identify: { summary: identifySpec.summary, run: identifyCommand },
  cluster: { summary: clusterSpec.summary, run: clusterCommand },
  info: { summary: infoSpec.summary, run: infoCommand },
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length)) + 2
  return [
    `facenet ${version()}: train, evaluate and run FaceNet face-embedding models`,
    '',
    'usage: facenet COMMAND [options]    (facenet COMMAND --help for its options)',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`),
    '',
    'Every command takes --config FILE (JSON options; flags win), --json and --help.',
    '',
    'exit codes:',
    `  ${EXIT.ok}    success`,
    `  ${EXIT.failure}    the work failed (unreadable data or weights, libtorch error, …)`,
    `  ${EXIT.usage}    usage error: unknown command or flag, bad value, bad config key`,
    `  ${EXIT.interrupted}  interrupted (Ctrl-C); 'train' writes a checkpoint first`,
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
  const command = COMMANDS[name]
  if (!command) {
    process.stderr.write(`facenet: unknown command ${JSON.stringify(name)}; commands: ${Object.keys(COMMANDS).join(', ')}\n`)
    return EXIT.usage
  }
  try {
    return await command.run(rest)
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`facenet ${name}: ${error.message}\n(see 'facenet ${name} --help')\n`)
      return EXIT.usage
    }
    if (error instanceof FaceNetError) {
      process.stderr.write(`facenet ${name}: ${error.message} [${error.code}]\n`)
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
