/**
 * A command's flags generated from option tables: each entry's flag is the kebab-case of its
 * field, read by its kind, checked by the entry's own check, shown in `--help` with its
 * default, and kept in `config.json` under the field's name. The CLI passes on only what the
 * user set; the API fills in the rest.
 */
import { z } from 'zod'
import { InvalidArgumentError } from '../errors'
import { checkOption, cliDefault, defaultHelp, type OptionEntry, type OptionTable } from '../tables/table'
import { quotedList } from '../options'
import type { FlagKind, FlagSpec } from './options'

/** An entry of a command's own table: as the API's, with a zod parser where the kind's is not enough. */
export type CommandOption<T = unknown> = OptionEntry<T> & { schema?: z.ZodType }

const FLAG_KIND: Record<OptionEntry['kind'], FlagKind> = { number: 'number', boolean: 'boolean', string: 'string', enum: 'string', list: 'string', object: 'string' }

/**
 * How a command shows a table: which entries (default: all with a flag), and a `prefix` for
 * a command where the group is one of several (`alignSize` for `size`, flag `--align-size`),
 * with `defaultFirst`, what the command fills in before the table's default.
 */
export interface TableView {
  keys?: readonly string[]
  prefix?: string
  defaultFirst?: string
}

/** The entries of `table` that have a flag (or those of `view.keys`), by their key in the command. */
function flagged(table: OptionTable, view: TableView | readonly string[] = {}): [string, CommandOption, string][] {
  const { keys, prefix } = Array.isArray(view) ? { keys: view as readonly string[], prefix: undefined } : (view as TableView)
  return (keys ?? Object.keys(table))
    .map((key) => [prefix ? `${prefix}${key[0]!.toUpperCase()}${key.slice(1)}` : key, table[key]!, key] as [string, CommandOption, string])
    .filter(([, entry]) => entry.cli?.noFlag === undefined)
}

/** `'a' (default), 'b' or 'c'`. */
function choices(entry: OptionEntry): string {
  const fallback = cliDefault(entry)
  const list = quotedList(entry.values ?? [])
  return fallback === undefined ? list : list.replace(`'${String(fallback)}'`, `'${String(fallback)}' (default)`)
}

/** The entry's `--help` line: its help, its choices or default, and its old names. */
export function helpLine(entry: OptionEntry, defaultFirst?: string): string {
  const parts = [entry.kind === 'enum' && !defaultFirst ? `${entry.help}: ${choices(entry)}` : entry.help]
  const tableDefault = entry.kind === 'enum' ? (defaultFirst ? `'${String(cliDefault(entry))}'` : '') : defaultHelp(entry).replace(/^default:? /, '')
  const fallback = defaultFirst ? `default: ${defaultFirst}${tableDefault ? `, else ${tableDefault}` : ''}` : entry.kind === 'enum' ? '' : defaultHelp(entry)
  const aliases = (entry.cli?.aliases ?? []).map((alias) => `--${kebabOf(alias.key)}`)
  const notes = [fallback, aliases.length > 0 ? `old name ${aliases.join(', ')}` : ''].filter((note) => note !== '')
  return notes.length > 0 ? `${parts[0]!} (${notes.join('; ')})` : parts[0]!
}

function kebabOf(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}

/** The flags of `table`'s entries (all with a flag, or `view`'s), by their key in the command. */
export function flagsOf(table: OptionTable, view: TableView | readonly string[] = {}): Record<string, FlagSpec> {
  const defaultFirst = Array.isArray(view) ? undefined : (view as TableView).defaultFirst
  return Object.fromEntries(
    flagged(table, view).map(([key, entry]) => [
      key,
      {
        kind: FLAG_KIND[entry.kind],
        help: helpLine(entry, defaultFirst),
        ...(entry.value ? { value: entry.value } : entry.kind === 'enum' ? { value: 'NAME' } : {}),
        ...(entry.cli?.aliases ? { aliases: entry.cli.aliases } : {}),
      } satisfies FlagSpec,
    ]),
  )
}

/** A zod parser of the entry's value as a flag or config key gives it, checked by the entry's check. */
function parserOf(key: string, entry: CommandOption): z.ZodType {
  let parser: z.ZodType
  if (entry.schema) parser = entry.schema
  else if (entry.kind === 'enum') parser = z.enum(entry.values as [string, ...string[]])
  else if (entry.kind === 'number') parser = z.number()
  else if (entry.kind === 'boolean') parser = z.boolean()
  else if (entry.kind === 'list' && entry.items === 'number') parser = z.preprocess((value) => (typeof value === 'string' ? value.split(',').map(Number) : value), z.array(z.number()))
  else if (entry.kind === 'list') parser = z.preprocess((value) => (typeof value === 'string' ? value.split(',') : value), z.array(z.string().min(1)))
  else parser = z.string().min(1)
  if (entry.kind !== 'enum' && entry.check) {
    parser = parser.superRefine((value, ctx) => {
      try {
        checkOption(entry, key, value)
      } catch (error) {
        if (!(error instanceof InvalidArgumentError)) throw error
        // The flag or key is named by the parser's caller; the check's words follow it.
        ctx.addIssue({ code: 'custom', message: error.message.startsWith(`${key} `) ? error.message.slice(key.length + 1) : error.message })
      }
    })
  }
  const fallback = entry.cli?.default
  return fallback !== undefined ? parser.default(fallback as never) : parser.optional()
}

/**
 * The zod shape of `table`'s entries that have a flag (or `view`'s): unset ones stay unset,
 * but for the CLI's own defaults (none under a `defaultFirst`, which the command fills in).
 */
export function schemaOf(table: OptionTable, view: TableView | readonly string[] = {}): Record<string, z.ZodType> {
  const own = Array.isArray(view) || (view as TableView).defaultFirst === undefined
  return Object.fromEntries(flagged(table, view).map(([key, entry, field]) => [key, parserOf(field, own ? entry : { ...entry, cli: { ...entry.cli, default: undefined } })]))
}

/** The options of `table` (all with a flag, or `view`'s) that `o` sets, by their API field: what the CLI hands the API. */
export function setIn<T extends object>(table: OptionTable, o: T, view: TableView | readonly string[] = {}): Record<string, unknown> {
  const values = o as Record<string, unknown>
  return Object.fromEntries(flagged(table, view).filter(([key]) => values[key] !== undefined).map(([key, , field]) => [field, values[key]]))
}
