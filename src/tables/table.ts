/**
 * Option tables: each option of a group (training, mining, loss, augmentation, detect, align,
 * eval) written once, with its API field name, kind, default, check and one line of help.
 * The API's resolvers fill in defaults and check values from a table; each CLI command
 * generates its flags (the field's kebab-case), their parsers, `--help` lines (with the
 * default) and `config.json` keys (the field) from the same entries.
 */
import { InvalidArgumentError } from '../errors'
import { oneOf } from '../options'

/**
 * How a value is read from a flag's text: a number, a switch, a string, one of `values`, a
 * comma list; `'object'` options are the API's only.
 */
export type OptionKind = 'number' | 'boolean' | 'string' | 'enum' | 'list' | 'object'

/** An older flag (and `config.json` key) that sets the option, kept for one release. */
export interface OptionAlias {
  /** The old name as a camelCase key; its flag is the kebab-case. */
  key: string
  /** For a switch that stood for one value of an enum (`--skip-bad-images` → `onBadImage: 'skip'`). */
  means?: unknown
}

export interface OptionEntry<T = unknown> {
  kind: OptionKind
  /** The choices of an `'enum'`. */
  values?: readonly string[]
  /** A `'list'` of numbers (a flag's `0.6,0.7,0.7`), not of strings. */
  items?: 'number'
  /** What the API fills in when the option is left out; undefined where none or derived. */
  default?: T
  /** A default that is not one value (derived from another option, or the model's), in words for the help. */
  defaultText?: string
  /**
   * The check at the API's boundary: returns the value or throws an
   * {@link InvalidArgumentError} that names the option (`name`). Enums are checked against
   * `values` without one.
   */
  check?(name: string, value: T): T
  /** One line of help, without the default (the generator adds it). */
  help: string
  /** `--help`'s placeholder for the value: `N`, `X`, `DIR`. */
  value?: string
  /** How commands show the option. */
  cli?: {
    /**
     * The CLI's own default, where it differs from the API's (`facenet train` sizes its
     * batches for a laptop CPU): the only default a command fills in itself.
     */
    default?: T
    aliases?: readonly OptionAlias[]
    /** Why no command has a flag for this option (the spec reads it). */
    noFlag?: string
  }
}

export type OptionTable = Readonly<Record<string, OptionEntry>>

type ValueOf<E> = E extends OptionEntry<infer T> ? T : never

/** Builds a table, keeping each entry's value type for the resolvers. */
export function optionTable<const G extends OptionTable>(entries: G): G {
  return entries
}

/** `entry` with its value type spelled out (the check's argument), and whether it has a default, so a table infers them. */
export function option<T>(entry: OptionEntry<T> & { default: T }): OptionEntry<T> & { default: T }
export function option<T>(entry: OptionEntry<T>): OptionEntry<T>
export function option<T>(entry: OptionEntry<T>): OptionEntry<T> {
  return entry
}

/**
 * The value of `key` from `input` (an options object), else its default; checked. `where`
 * names it in messages (e.g. `augment.cropScale`). Undefined where the option has no default
 * and was left out.
 */
export function resolveOption<G extends OptionTable, K extends keyof G & string>(
  table: G,
  key: K,
  input: object | undefined,
  where: string = key,
): undefined extends G[K]['default'] ? ValueOf<G[K]> | undefined : ValueOf<G[K]> {
  const entry = table[key]!
  const given = (input as Record<string, unknown> | undefined)?.[key]
  const value = given === undefined ? entry.default : given
  if (value === undefined) return undefined as never
  return checkOption(entry, where, value) as never
}

/** `value` against `entry`'s check (its enum's values, its kind's type). */
export function checkOption(entry: OptionEntry, name: string, value: unknown): unknown {
  if (entry.kind === 'enum') return oneOf(name, value, entry.values ?? [])
  if (entry.kind === 'boolean' && typeof value !== 'boolean') throw new InvalidArgumentError(`${name} must be true or false, got ${String(value)}`)
  return entry.check ? (entry.check as (name: string, value: unknown) => unknown)(name, value) : value
}

/** The default a command shows and fills in: the CLI's own, else the API's. */
export function cliDefault(entry: OptionEntry): unknown {
  return entry.cli?.default !== undefined ? entry.cli.default : entry.default
}

/** `--help`'s words for the default: `default 0.2`, `default: the CPU count`; '' where there is none. */
export function defaultHelp(entry: OptionEntry): string {
  const value = cliDefault(entry)
  // false and [] read as "off" and "none": the help says what the option does instead.
  if (value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0)) return `default ${Array.isArray(value) ? value.join(',') : typeof value === 'object' ? JSON.stringify(value) : String(value)}`
  return entry.defaultText ? `default: ${entry.defaultText}` : ''
}
