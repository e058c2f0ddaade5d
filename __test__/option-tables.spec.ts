import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import test from 'ava'
import { helpText, kebab, parseCommand, UsageError } from '../src/cli/options'
import { helpLine } from '../src/cli/table-flags'
import { ALIGN } from '../src/tables/align'
import { AUGMENT } from '../src/tables/augment'
import { DETECT } from '../src/tables/detect'
import { EVAL } from '../src/tables/eval'
import { LOSS } from '../src/tables/loss'
import { MINING } from '../src/tables/mining'
import type { OptionTable } from '../src/tables/table'
import { TRAINING } from '../src/tables/training'

const ROOT = join(__dirname, '..')
const TABLES: Record<string, OptionTable> = { training: TRAINING, mining: MINING, loss: LOSS, augmentation: AUGMENT, detect: DETECT, align: ALIGN, eval: EVAL }

async function commandSpecs() {
  const use = await import('../src/cli/use')
  return [
    (await import('../src/cli/train')).trainSpec,
    (await import('../src/cli/eval')).evalSpec,
    (await import('../src/cli/detect')).detectSpec,
    (await import('../src/cli/align')).alignSpec,
    use.embedSpec,
  ]
}

test('every entry of every option table has a flag whose --help line is generated from it, or says why it has none', async (t) => {
  const specs = await commandSpecs()
  for (const [group, table] of Object.entries(TABLES)) {
    for (const [field, entry] of Object.entries(table)) {
      const where = `${group}.${field}`
      if (entry.cli?.noFlag !== undefined) {
        t.true(entry.cli.noFlag.length > 10, `${where} says why it has no flag`)
        continue
      }
      // A group's own command first: align's --margin, not train's (the loss's).
      const own = { detect: 'detect', align: 'align', eval: 'eval' }[group] ?? 'train'
      const spec = [...specs.filter((s) => s.name === own), ...specs].find((s) => Object.hasOwn(s.flags, field))
      t.truthy(spec, `${where} is a flag of some command (--${kebab(field)})`)
      if (!spec) continue
      const help = helpText(spec)
      t.true(help.includes(`--${kebab(field)}`), `${where} in facenet ${spec.name} --help`)
      // eval names the model its own way; every other flag's line is the table's.
      if (!(group === 'eval' && field === 'name')) t.true(help.includes(helpLine(entry)), `${where}: facenet ${spec.name} --help shows the table's line "${helpLine(entry)}"`)
      for (const alias of entry.cli?.aliases ?? []) t.true(help.includes(`--${kebab(alias.key)}`), `${where}: the old name --${kebab(alias.key)} is documented`)
    }
  }
})

test('the options reference (docs/options.md) is generated from the tables, is up to date, names every flag, and the README links it', async (t) => {
  const { optionsReference, OPTIONS_REFERENCE } = await import('../scripts/options-reference')
  const text = await optionsReference()
  t.is(readFileSync(OPTIONS_REFERENCE, 'utf8'), text, 'docs/options.md is stale: run npx tsx scripts/options-reference.ts')
  for (const table of Object.values(TABLES)) {
    for (const [field, entry] of Object.entries(table)) if (entry.cli?.noFlag === undefined) t.true(text.includes(`\`--${kebab(field)}`), `--${kebab(field)} in the reference`)
  }
  t.true(readFileSync(join(ROOT, 'README.md'), 'utf8').includes('](docs/options.md)'), 'the README links the reference')
})

test("every entry of every option table is named in its group's row of the README's options table", (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8').split('\n')
  for (const [group, table] of Object.entries(TABLES)) {
    const row = readme.find((line) => line.startsWith(`| ${group} (`))
    t.truthy(row, `the README's options table has a ${group} row`)
    for (const field of Object.keys(table)) t.true(row?.includes(`\`${field}\``) ?? false, `${group}.${field} in the README's ${group} row`)
  }
})

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? sources(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []))
}

function literal(value: unknown): string | undefined {
  if (typeof value === 'string') return `'${value}'`
  if (typeof value === 'number') return String(value).replace('.', '\\.')
  return undefined
}

test('no table default is written outside src/tables: no `field ?? value`, `field: ….default(value)` or "field … (default value" elsewhere in src/', (t) => {
  const files = sources(join(ROOT, 'src')).filter((file) => !file.includes(`${join('src', 'tables')}`))
  const found: string[] = []
  for (const [group, table] of Object.entries(TABLES)) {
    for (const [field, entry] of Object.entries(table)) {
      const value = literal(entry.default)
      if (value === undefined) continue
      const patterns = [
        new RegExp(`\\b${field}\\s*\\?\\?\\s*${value}(?![\\w.])`),
        new RegExp(`\\b${field}:[^\\n]*\\.default\\(${value}\\)`),
        new RegExp(`\\b${field}: \\{[^\\n]*\\(default:? ${value}(?![\\w.])`),
      ]
      for (const file of files) {
        const text = readFileSync(file, 'utf8')
        for (const pattern of patterns) if (pattern.test(text)) found.push(`${relative(ROOT, file)}: ${group}.${field}'s default ${value} (${pattern.source})`)
      }
    }
  }
  t.deepEqual(found, [])
})

test('facenet train: the old flag and config names set the new options, and giving both is refused', async (t) => {
  const { trainSpec } = await import('../src/cli/train')
  const old = await parseCommand(trainSpec, ['--lfw', '--out', 'x', '--batch-identities', '3', '--batch-images', '5', '--negatives', '0', '--rotation', '10', '--skip-bad-images'])
  t.like(old.options, { identitiesPerBatch: 3, imagesPerIdentity: 5, negativesPerBatch: 0, maxRotation: 10, onBadImage: 'skip' })
  t.is(old.flagNames.identitiesPerBatch, '--batch-identities', 'messages name the flag as typed')
  const saved = await parseCommand(trainSpec, ['--lfw', '--out', 'x'], { batchIdentities: 7, rotation: 5, skipBadImages: true })
  t.like(saved.options, { identitiesPerBatch: 7, maxRotation: 5, onBadImage: 'skip' }, "a config.json written before the rename resumes with the same recipe")
  await t.throwsAsync(parseCommand(trainSpec, ['--lfw', '--out', 'x', '--batch-identities', '3', '--identities-per-batch', '4']), { instanceOf: UsageError, message: /--identities-per-batch and its old name --batch-identities/ })
})

test("facenet train hands the Trainer only what the user set, and the CLI's own laptop-sized defaults", async (t) => {
  const { trainSpec } = await import('../src/cli/train')
  const { options } = await parseCommand(trainSpec, ['--lfw', '--out', 'x', '--lr', '0.01'])
  const o = options as Record<string, unknown>
  t.like(o, { lr: 0.01, arch: 'tiny', identitiesPerBatch: 32, imagesPerIdentity: 4, checkpointEvery: 100 })
  for (const key of ['optimizer', 'miner', 'margin', 'cropScale', 'seed', 'centerCrop', 'onBadImage']) t.is(o[key], undefined, `${key} is left to the API's default`)
})
