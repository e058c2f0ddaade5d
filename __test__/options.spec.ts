import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import { binding } from '../src/binding'
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

// Each `#[napi(string_enum)]` of the binding beside the TS list it must equal.
const PAIRS: [string, readonly string[]][] = [
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

test('every option list of the TS API equals the string enum the binding declares', (t) => {
  const exported = binding as unknown as Record<string, Record<string, string> | undefined>
  for (const [name, list] of PAIRS) {
    const native = exported[name]
    t.truthy(native, `${name} is exported by the addon`)
    t.deepEqual(Object.values(native ?? {}), [...list], name)
  }
})

test('index.d.ts types each string enum as the union of its literals', (t) => {
  const dts = readFileSync(join(__dirname, '..', 'index.d.ts'), 'utf8')
  for (const [name, list] of PAIRS) {
    t.true(dts.includes(`export type ${name} = ${list.map((v) => `'${v}'`).join(' | ')}`), name)
  }
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
