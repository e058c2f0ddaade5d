import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { ARCHS, quotedList } from '../options'
import { readRegularFile } from '../regular-file'
import { DataError } from '../errors'
import type { OptionAlias } from '../tables/table'
import { EVAL } from '../tables/eval'
import { flagsOf, schemaOf } from './table-flags'

/**
 * Exit codes of the `facenet` command (also listed by `facenet --help`):
 * 0 success; 1 the work failed (bad data, unreadable weights, libtorch error…);
 * 2 usage error (unknown command or flag, a bad value, a bad config key);
 * 130 interrupted by Ctrl-C (training writes a checkpoint first).
 */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const

/** One line per command, for `facenet --help` (which must not load the commands' modules). */
export const SUMMARIES = {
  train: 'train a FaceNet model (triplet loss, or ArcFace, CosFace, softmax + centre)',
  eval: 'LFW-style verification: accuracy ± std over folds, VAL@FAR, AUC; stores the calibrated threshold with the model',
  embed: 'embed images (files, or folders searched recursively)',
  compare: 'distance between two faces, and same or different person',
  identify: 'who is this? the nearest identities of a gallery (DIR/Name/*.jpg) to probe images',
  cluster: 'group the faces of a folder (searched recursively) by person',
  info: 'library version, libtorch version and the devices libtorch sees',
  setup: 'find or install libtorch (torch==2.11.0 from PyPI, once per machine)',
  pack: 'decode an identity-folder dataset once into images.npy + names.npy (resumable)',
  align: 'detect and align the faces of identity folders of photos into identity folders of crops',
  detect: 'find the faces of photos (MTCNN): boxes, scores, 5 landmarks; --draw them onto a PNG',
  convert: 'a PyTorch state_dict (.pt/.pth, e.g. facenet-pytorch weights) to safetensors, without Python',
} as const

/** A mistake in how the command was called: exits with {@link EXIT.usage}. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** How a flag's text becomes a config value before the schema checks it. */
export type FlagKind = 'string' | 'number' | 'boolean' | 'strings'

export interface FlagSpec {
  kind: FlagKind
  /** One line for `--help`. */
  help: string
  /** Shown in `--help` after the flag, e.g. `DIR`. */
  value?: string
  short?: string
  /** Older names of the flag (and config key), kept for one release. */
  aliases?: readonly OptionAlias[]
}

export interface CommandSpec<S extends z.ZodObject> {
  name: string
  summary: string
  /** e.g. `facenet compare A B --model M`. */
  usage: string
  /** What the positional arguments are; `undefined` when the command takes none. */
  positionals?: { name: string; min: number; max?: number }
  /** Flags by config key (camelCase); the flag is its kebab-case form. */
  flags: Record<string, FlagSpec>
  schema: S
  /** Extra lines for `--help`. */
  notes?: string[]
}

/** Flags every command takes. */
export const COMMON_FLAGS: Record<string, FlagSpec> = {
  config: { kind: 'string', value: 'FILE', help: 'JSON file of options (keys as camelCase flags); flags win over it' },
  json: { kind: 'boolean', help: 'print the result as JSON on stdout' },
  help: { kind: 'boolean', short: 'h', help: 'show this help' },
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}

function flagValue(kind: FlagKind, text: string | boolean | (string | boolean)[]): unknown {
  if (kind === 'boolean' || kind === 'strings') return text
  const value = Array.isArray(text) ? text.at(-1)! : text
  if (kind === 'number' && typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value)
  return value
}

function describe(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') {
    if ('input' in issue && issue.input === undefined) return 'is required'
    return `expected ${issue.expected}${'input' in issue && issue.input !== undefined ? `, got ${JSON.stringify(issue.input)}` : ''}`
  }
  if (issue.code === 'invalid_value') return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`
  return issue.message
}

/**
 * `values` (a config file's or a saved recipe's keys) with old names replaced by the
 * current ones, and the name each value was given under, for messages.
 */
export function canonicalKeys(flags: Record<string, FlagSpec>, values: Record<string, unknown>, source = 'the config'): { values: Record<string, unknown>; names: Record<string, string> } {
  const out: Record<string, unknown> = { ...values }
  const names: Record<string, string> = {}
  for (const [key, flag] of Object.entries(flags)) {
    for (const alias of flag.aliases ?? []) {
      if (!Object.hasOwn(out, alias.key)) continue
      const value = out[alias.key]
      delete out[alias.key]
      if (Object.hasOwn(values, key)) throw new UsageError(`${source} sets both '${key}' and its old name '${alias.key}'; keep '${key}'`)
      // An old switch that stood for one value: true means it, false means nothing.
      if (alias.means !== undefined && value !== true) continue
      out[key] = alias.means ?? value
      names[key] = alias.key
    }
  }
  return { values: out, names }
}

export interface Parsed<T> {
  options: T
  positionals: string[]
  json: boolean
  help: boolean
  /** Keys given as flags (not from the config file), for commands that care. */
  fromFlags: Set<string>
  /** The flag each option set by a flag was given with (`--batch-identities` for an old name). */
  flagNames: Record<string, string>
  configFile?: string
}

/**
 * Parses `argv` against `spec`: flags (kebab-case), then `--config FILE` underneath them,
 * then the schema, whose errors name the flag or the config key at fault.
 */
export async function parseCommand<S extends z.ZodObject>(
  spec: CommandSpec<S>,
  argv: string[],
  base: Record<string, unknown> = {},
): Promise<Parsed<z.infer<S>>> {
  const all = { ...spec.flags, ...COMMON_FLAGS }
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {}
  for (const [key, flag] of Object.entries(all)) {
    options[kebab(key)] = {
      type: flag.kind === 'boolean' ? 'boolean' : 'string',
      ...(flag.short ? { short: flag.short } : {}),
      ...(flag.kind === 'strings' ? { multiple: true } : {}),
    }
    for (const alias of flag.aliases ?? []) options[kebab(alias.key)] = { type: flag.kind === 'boolean' || alias.means !== undefined ? 'boolean' : 'string' }
  }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (error) {
    // node's messages name the flag ("Unknown option '--foo'"); keep them, minus its hints.
    throw new UsageError(`${(error as Error).message.split('. To specify')[0]!}`)
  }
  const values = parsed.values as Record<string, string | boolean | (string | boolean)[] | undefined>
  const help = values.help === true
  const json = values.json === true
  const flagged: Record<string, unknown> = {}
  // The flag each option was given with (an old name included), for messages.
  const typed: Record<string, string> = {}
  for (const [key, flag] of Object.entries(spec.flags)) {
    const text = values[kebab(key)]
    if (text !== undefined) flagged[key] = flagValue(flag.kind, text)
    for (const alias of flag.aliases ?? []) {
      const old = values[kebab(alias.key)]
      if (old === undefined) continue
      if (key in flagged) throw new UsageError(`--${kebab(key)} and its old name --${kebab(alias.key)} set the same option; give --${kebab(key)}`)
      flagged[key] = alias.means ?? flagValue(flag.kind, old)
      typed[key] = `--${kebab(alias.key)}`
    }
  }
  let fromConfig: Record<string, unknown> = {}
  let configNames: Record<string, string> = {}
  const configFile = typeof values.config === 'string' ? resolve(values.config) : undefined
  if (configFile && !help) ({ values: fromConfig, names: configNames } = canonicalKeys(spec.flags, await readConfig(configFile), configFile))
  const merged = { ...canonicalKeys(spec.flags, base).values, ...fromConfig, ...flagged }
  const positionals = parsed.positionals
  const flagNames = Object.fromEntries(Object.keys(flagged).map((key) => [key, typed[key] ?? `--${kebab(key)}`]))
  if (help) return { options: merged as z.infer<S>, positionals, json, help, fromFlags: new Set(Object.keys(flagged)), flagNames, configFile }
  const result = spec.schema.safeParse(merged, { reportInput: true })
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((key) => `config key '${key}' in ${configFile ?? 'the config'} is not an option of 'facenet ${spec.name}'`).join('\n')
      }
      const key = String(issue.path[0] ?? '')
      const where = key in flagged ? (typed[key] ?? `--${kebab(key)}`) : key in fromConfig ? `config key '${configNames[key] ?? key}' in ${configFile}` : `--${kebab(key)}`
      return `${where}: ${describe(issue)}`
    })
    throw new UsageError(lines.join('\n'))
  }
  const count = positionals.length
  const p = spec.positionals
  if (!p && count > 0) throw new UsageError(`'facenet ${spec.name}' takes no positional arguments, got ${JSON.stringify(positionals[0])}`)
  if (p && (count < p.min || (p.max !== undefined && count > p.max))) {
    const want = p.max === p.min ? `${p.min}` : p.max === undefined ? `at least ${p.min}` : `${p.min} to ${p.max}`
    throw new UsageError(`'facenet ${spec.name}' takes ${want} ${p.name}, got ${count}`)
  }
  return { options: result.data, positionals, json, help, fromFlags: new Set(Object.keys(flagged)), flagNames, configFile }
}

async function readConfig(file: string): Promise<Record<string, unknown>> {
  let text: string
  try {
    text = await readRegularFile(file, 'utf8')
  } catch (error) {
    if (error instanceof DataError) throw new UsageError(`--config: ${error.message}`)
    throw new UsageError(`--config: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`)
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new UsageError(`--config: ${file} is not valid JSON (${(error as Error).message})`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UsageError(`--config: ${file} must hold a JSON object of options`)
  }
  return value as Record<string, unknown>
}

export function printHelp<S extends z.ZodObject>(spec: CommandSpec<S>): number {
  process.stdout.write(helpText(spec))
  return EXIT.ok
}

export function helpText<S extends z.ZodObject>(spec: CommandSpec<S>): string {
  const rows = Object.entries({ ...spec.flags, ...COMMON_FLAGS }).map(([key, flag]) => {
    const name = `${flag.short ? `-${flag.short}, ` : ''}--${kebab(key)}${flag.value ? ` ${flag.value}` : ''}`
    return [name, flag.help] as const
  })
  const width = Math.max(...rows.map(([name]) => name.length)) + 2
  return [
    `facenet ${spec.name}: ${spec.summary}`,
    '',
    `usage: ${spec.usage}`,
    '',
    'options:',
    ...rows.map(([name, text]) => `  ${name.padEnd(width)}${text}`),
    ...(spec.notes ? ['', ...spec.notes] : []),
    '',
  ].join('\n')
}

/** Options every command that loads a model shares. */
export const MODEL_FLAGS: Record<string, FlagSpec> = {
  model: { kind: 'string', value: 'FILE', help: "model weights (.safetensors, a PyTorch .pt/.pth state_dict or a dlib .dat), e.g. runs/NAME/model.safetensors; default: the pretrained 'dlib-resnet-v1' shipped in the package" },
  arch: { kind: 'string', value: 'ARCH', help: `arch of a plain state_dict without facenet-torch metadata: ${ARCHS.join(', ')}` },
  device: { kind: 'string', value: 'DEV', help: "'auto' (default), 'cpu', 'cuda' or 'cuda:N'" },
  threads: { kind: 'number', value: 'N', help: 'libtorch threads (default: the CPU count)' },
  centerCrop: { kind: 'number', value: 'F', help: "central fraction kept before resizing (default: the model's, stored at training)" },
  ...flagsOf(EVAL, ['batchSize']),
}

/** `--device` of every command. */
export const deviceSchema = z.string().regex(/^(auto|cpu|cuda(:\d+)?)$/, "expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
export const positiveInt = z.number().int().positive()
export const crop = z.number().gt(0).lte(1)

export const modelSchema = {
  model: z.string().min(1).optional(),
  arch: z.enum(ARCHS).optional(),
  device: deviceSchema.default('auto'),
  threads: positiveInt.optional(),
  centerCrop: crop.optional(),
  batchSize: schemaOf(EVAL, ['batchSize']).batchSize as z.ZodOptional<z.ZodNumber>,
}

/** `1 cluster`, `2 clusters`: a count with its noun in the right number. */
export function counted(n: number, singular: string, pluralForm = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : pluralForm}`
}

/** Help text for a flag with a closed set of values: `what: 'a' (default), 'b' or 'c'`. */
export function choicesHelp(what: string, values: readonly string[], fallback?: string): string {
  const list = quotedList(values)
  return `${what}: ${fallback === undefined ? list : list.replace(`'${fallback}'`, `'${fallback}' (default)`)}`
}

export function version(): string {
  // package.json sits two levels above this file in both src/cli and dist/cli.
  return (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version
}
