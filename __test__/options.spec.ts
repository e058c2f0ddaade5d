import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test from 'ava'
import { binding } from '../src/binding'
import * as generated from '../src/binding-enums'
import {
  ALIGN_MODES,
  ARCHS,
  DISTANCES,
  FALLBACKS,
  LOSSES,
  MINERS,
  NEGATIVE_CHOICES,
  NORMALIZATIONS,
  OPTIMIZERS,
  PRECISIONS,
  REDUCERS,
  SCHEDULES,
  FITS,
} from '../src/options'

const ROOT = join(__dirname, '..')

// Each public list of src/options.ts that crosses the boundary, beside the binding enum it is.
const PUBLIC: [string, readonly string[]][] = [
  ['BindingArch', ARCHS],
  ['BindingNormalization', NORMALIZATIONS],
  ['BindingPrecision', PRECISIONS],
  ['BindingMiner', MINERS],
  ['BindingNegativeChoice', NEGATIVE_CHOICES],
  ['BindingFallback', FALLBACKS],
  ['BindingDistance', DISTANCES],
  ['BindingReducer', REDUCERS],
  ['BindingOptimizer', OPTIMIZERS],
  ['BindingSchedule', SCHEDULES],
  ['BindingAlignMode', ALIGN_MODES],
  ['BindingLossKind', LOSSES],
  ['BindingFit', FITS],
]

/** `BindingNegativeChoice` → `BINDING_NEGATIVE_CHOICE`, the generated list's name. */
const constantName = (typeName: string) => typeName.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
const GENERATED = generated as Record<string, readonly string[]>

test('src/binding-enums.ts is what scripts/binding-enums.mjs generates from the committed index.d.ts', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'facenet-enums-')), 'binding-enums.ts')
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'binding-enums.mjs'), out])
  t.is(readFileSync(join(ROOT, 'src', 'binding-enums.ts'), 'utf8'), readFileSync(out, 'utf8'), 'src/binding-enums.ts is stale: run node scripts/binding-enums.mjs')
})

test("the built addon's string enums are the generated lists (index.d.ts matches the addon), and each public list is its enum's", (t) => {
  // The addon's only object-valued exports are its string enums ({ SemiHard: 'semi-hard', … }).
  const native = Object.entries(binding as unknown as Record<string, unknown>).filter(
    (entry): entry is [string, Record<string, string>] => typeof entry[1] === 'object' && entry[1] !== null,
  )
  t.deepEqual(native.map(([name]) => constantName(name)).sort(), Object.keys(GENERATED).sort(), 'one generated list per addon enum')
  for (const [name, values] of native) t.deepEqual(GENERATED[constantName(name)], Object.values(values), name)
  for (const [name, list] of PUBLIC) t.is(GENERATED[constantName(name)], list, `${name}'s public list is the generated one`)
})

test("detect and align default to --device auto like every other command; counts read '1 cluster', '2 clusters'", async (t) => {
  const { parseCommand, counted } = await import('../src/cli/options')
  const { detectSpec } = await import('../src/cli/detect')
  const { alignSpec } = await import('../src/cli/align')
  t.is((await parseCommand(detectSpec, ['a.jpg'])).options.device, 'auto')
  t.is((await parseCommand(alignSpec, ['in', 'out'])).options.device, 'auto')
  t.is(counted(1, 'cluster'), '1 cluster')
  t.is(counted(2, 'cluster'), '2 clusters')
  t.is(counted(0, 'face'), '0 faces')
})
