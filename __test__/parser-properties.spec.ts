/**
 * Property tests (fast-check, 10,000 cases each) of the two text/byte parsers that read
 * untrusted files: the `.npy` header parser and the LFW pairs parser. Each either returns
 * a consistent result or throws a DataError naming the file; nothing else ever escapes,
 * and no parsed image path leaves the data root.
 */
import test from 'ava'
import fc from 'fast-check'
import { isAbsolute, relative, resolve, sep } from 'node:path'
import { DataError, LfwPairs } from '../src'
import { parseNpy } from '../src/data/npy'

const RUNS = 10_000
const FILE = '/data/set/file.npy'

/** Runs `parse`; anything thrown must be a DataError naming the file. */
function outcome<T>(parse: () => T, file: string): T | DataError {
  try {
    return parse()
  } catch (error) {
    if (!(error instanceof DataError)) throw new Error(`threw ${String(error)} instead of a DataError`, { cause: error })
    if (error.file !== file || !error.message.startsWith(file)) throw new Error(`DataError does not name ${file}: ${error.message}`)
    return error
  }
}

// ── .npy ─────────────────────────────────────────────────────────────────────

const DESCRS: Record<string, number> = { '|u1': 1, '<f4': 4, '>f4': 4, '<f8': 8, '<i2': 2, '|b1': 1, '<U3': 12, '|S5': 5, '<i8': 8 }

/** An .npy file exactly as numpy writes it (header padded so the data is 64-aligned). */
function npyFile(version: 1 | 2 | 3, descr: string, fortran: boolean, shape: number[], data: Uint8Array): Buffer {
  const tuple = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`
  let header = `{'descr': '${descr}', 'fortran_order': ${fortran ? 'True' : 'False'}, 'shape': ${tuple}, }`
  const prefix = version === 1 ? 10 : 12
  while ((prefix + header.length + 1) % 64 !== 0) header += ' '
  header += '\n'
  const head = Buffer.alloc(prefix)
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(head)
  if (version === 1) head.writeUInt16LE(header.length, 8)
  else head.writeUInt32LE(header.length, 8)
  return Buffer.concat([head, Buffer.from(header, version === 3 ? 'utf8' : 'latin1'), data])
}

const validNpy = fc
  .record({
    version: fc.constantFrom(1 as const, 2 as const, 3 as const),
    descr: fc.constantFrom(...Object.keys(DESCRS)),
    fortran: fc.boolean(),
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }),
  })
  .chain((spec) => {
    const bytes = spec.shape.reduce((a, b) => a * b, 1) * DESCRS[spec.descr]!
    return fc.record({ spec: fc.constant(spec), data: fc.uint8Array({ minLength: bytes, maxLength: bytes }) })
  })

test('parseNpy: 10,000 numpy-shaped files parse back to their dtype, order, shape and bytes', (t) => {
  fc.assert(
    fc.property(validNpy, ({ spec, data }) => {
      const parsed = parseNpy(npyFile(spec.version, spec.descr, spec.fortran, spec.shape, data), FILE)
      return (
        parsed.descr === spec.descr &&
        parsed.fortranOrder === spec.fortran &&
        JSON.stringify(parsed.shape) === JSON.stringify(spec.shape) &&
        Buffer.from(data).equals(parsed.data)
      )
    }),
    { numRuns: RUNS },
  )
  t.pass()
})

test('parseNpy: 10,000 truncated or extended files are DataErrors, never partial arrays', (t) => {
  fc.assert(
    fc.property(validNpy, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 16 }), fc.boolean(), ({ spec, data }, cut, extra, truncate) => {
      const file = npyFile(spec.version, spec.descr, spec.fortran, spec.shape, data)
      const bad = truncate ? file.subarray(0, cut % file.length) : Buffer.concat([file, extra])
      return outcome(() => parseNpy(bad, FILE), FILE) instanceof DataError
    }),
    { numRuns: RUNS },
  )
  t.pass()
})

/** Header dicts built from the tokens a malicious or broken writer could use. */
const headerText = fc
  .array(
    fc.oneof(
      fc.constantFrom('{', '}', '(', ')', ',', ':', ' ', "'", '"', 'True', 'False', 'None', '-', '\n', '\t', '\\'),
      fc.constantFrom("'descr'", "'fortran_order'", "'shape'", "'<f4'", "'|u1'", "'|O'", "'<U99999999999'", "'<f16'"),
      fc.oneof(fc.nat().map(String), fc.constantFrom('99999999999999999999999', '1e9', '0x10', '18446744073709551616', '-1')),
      fc.string({ maxLength: 4 }),
    ),
    { maxLength: 24 },
  )
  .map((tokens) => tokens.join(''))

test('parseNpy: 10,000 fuzzed headers (and data) parse consistently or are DataErrors', (t) => {
  fc.assert(
    fc.property(
      headerText,
      fc.constantFrom(1 as const, 2 as const, 3 as const),
      fc.uint8Array({ maxLength: 64 }),
      fc.option(fc.nat({ max: 0xffffffff }), { nil: undefined }),
      (text, version, data, lyingLength) => {
        const header = Buffer.from(`${text}\n`, version === 3 ? 'utf8' : 'latin1')
        const prefix = Buffer.alloc(version === 1 ? 10 : 12)
        Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]).copy(prefix)
        const length = lyingLength === undefined ? header.length : version === 1 ? lyingLength & 0xffff : lyingLength
        if (version === 1) prefix.writeUInt16LE(length, 8)
        else prefix.writeUInt32LE(length, 8)
        const result = outcome(() => parseNpy(Buffer.concat([prefix, header, data]), FILE), FILE)
        if (result instanceof DataError) return true
        // A parsed array is self-consistent: safe non-negative dims, exactly the data it claims.
        return result.shape.every((d) => Number.isSafeInteger(d) && d >= 0) && result.data.length <= data.length
      },
    ),
    { numRuns: RUNS },
  )
  t.pass()
})

test('parseNpy: 10,000 arbitrary byte strings (with and without the magic) never escape as anything but DataError', (t) => {
  const magic = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59])
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, withMagic) => {
      const input = withMagic ? Buffer.concat([magic, bytes]) : Buffer.from(bytes)
      outcome(() => parseNpy(input, FILE), FILE)
    }),
    { numRuns: RUNS },
  )
  t.pass()
})

// ── LFW pairs ────────────────────────────────────────────────────────────────

const ROOT = resolve('/data/lfw')
const PAIRS = `${ROOT}/pairs.txt`
const noImages = { checkImages: false } as const

function insideRoot(path: string): boolean {
  const rel = relative(ROOT, path)
  return !rel.startsWith('..') && !isAbsolute(rel) && rel.split(sep).length === 2
}

const safeName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.'-]{0,12}$/)

const validPairs = fc
  .record({ folds: fc.integer({ min: 1, max: 3 }), perFold: fc.integer({ min: 1, max: 4 }), view1: fc.boolean() })
  .chain(({ folds, perFold, view1 }) => {
    const f = view1 ? 1 : folds
    const matched = fc.tuple(safeName, fc.integer({ min: 1, max: 9999 }), fc.integer({ min: 1, max: 9999 }))
    const mismatched = fc.tuple(safeName, fc.integer({ min: 1, max: 9999 }), safeName, fc.integer({ min: 1, max: 9999 }))
    return fc.record({
      view1: fc.constant(view1),
      folds: fc.constant(f),
      perFold: fc.constant(perFold),
      body: fc.array(fc.tuple(fc.array(matched, { minLength: perFold, maxLength: perFold }), fc.array(mismatched, { minLength: perFold, maxLength: perFold })), {
        minLength: f,
        maxLength: f,
      }),
      crlf: fc.boolean(),
      spacing: fc.constantFrom(' ', '\t', '  '),
    })
  })

test('LfwPairs.fromText: 10,000 well-formed files give their pairs, every path inside the root', async (t) => {
  await fc.assert(
    fc.asyncProperty(validPairs, async (g) => {
      const s = g.spacing
      const lines = [g.view1 ? `${g.perFold}` : `${g.folds}${s}${g.perFold}`]
      for (const [matched, mismatched] of g.body) {
        for (const [n, i, j] of matched) lines.push([n, i, j].join(s))
        for (const [a, i, b, j] of mismatched) lines.push([a, i, b, j].join(s))
      }
      const text = lines.join(g.crlf ? '\r\n' : '\n') + '\n'
      const parsed = await LfwPairs.fromText(text, PAIRS, noImages)
      if (parsed.folds.length !== g.folds) return false
      return g.body.every(([matched, mismatched], f) => {
        const pairs = parsed.folds[f]!.pairs
        const expected = [...matched.map(([n, i, j]) => [n, i, n, j, true] as const), ...mismatched.map(([a, i, b, j]) => [a, i, b, j, false] as const)]
        return (
          pairs.length === expected.length &&
          pairs.every((p, k) => {
            const [a, i, b, j, same] = expected[k]!
            return (
              p.identityA === a &&
              p.indexA === i &&
              p.identityB === b &&
              p.indexB === j &&
              p.same === same &&
              insideRoot(p.a) &&
              insideRoot(p.b) &&
              p.a === resolve(ROOT, a, `${a}_${String(i).padStart(4, '0')}.jpg`)
            )
          })
        )
      })
    }),
    { numRuns: RUNS },
  )
  t.pass()
})

/** Names an attacker would put in a pairs file to reach outside the data root. */
const hostileName = fc.oneof(
  safeName,
  fc.constantFrom('..', '.', '../..', '/etc', '/etc/passwd', 'a/../../b', '..\\..', 'C:\\Windows', '\0', 'a\0b', '%2e%2e', '~', '~root', '.hidden', '…', '..%2f'),
  fc.string({ maxLength: 8 }),
)

/** Structurally valid View 1 files whose names are hostile: the root check must catch them. */
const hostileButWellFormed = fc
  .tuple(hostileName, fc.integer({ min: 1, max: 9999 }), fc.integer({ min: 1, max: 9999 }), hostileName, hostileName)
  .map(([n, i, j, a, b]) => `1\n${n} ${i} ${j}\n${a} ${i} ${b} ${j}\n`)

const chaoticPairs = fc
  .record({
    header: fc.oneof(fc.constantFrom('1 1', '1', '2 1', '0 1', '1 0', '-1 1', '1 1 1', '', '99999999999999999999 1', '1e3'), fc.string({ maxLength: 6 })),
    rows: fc.array(
      fc.oneof(
        fc.tuple(hostileName, fc.oneof(fc.nat().map(String), fc.string({ maxLength: 3 })), fc.nat().map(String)).map((r) => r.join(' ')),
        fc.tuple(hostileName, fc.nat().map(String), hostileName, fc.nat().map(String)).map((r) => r.join(' ')),
        fc.string({ maxLength: 20 }),
      ),
      { maxLength: 5 },
    ),
  })
  .map(({ header, rows }) => [header, ...rows].join('\n'))

const hostilePairs = fc.oneof(hostileButWellFormed, chaoticPairs)

test('LfwPairs.fromText: 10,000 malformed or hostile files are DataErrors or pairs inside the root', async (t) => {
  let accepted = 0
  await fc.assert(
    fc.asyncProperty(hostilePairs, async (text) => {
      let result: LfwPairs | DataError
      try {
        result = await LfwPairs.fromText(text, PAIRS, noImages)
      } catch (error) {
        if (!(error instanceof DataError) || error.file !== PAIRS) throw error
        return true
      }
      accepted += 1
      return result.pairs.every((p) => insideRoot(p.a) && insideRoot(p.b))
    }),
    { numRuns: RUNS },
  )
  t.log(`${accepted} of ${RUNS} generated files were well-formed; every one of their paths stayed inside the root`)
  t.true(accepted > 0)
})

test('LfwPairs.fromText: 10,000 arbitrary strings never escape as anything but DataError', async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 120 }), async (text) => {
      try {
        await LfwPairs.fromText(text, PAIRS, noImages)
      } catch (error) {
        if (!(error instanceof DataError) || error.file !== PAIRS) throw error
      }
    }),
    { numRuns: RUNS },
  )
  t.pass()
})
