import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import test from 'ava'
import * as api from '../src/index'

const root = join(__dirname, '..')

/** The names `src/index.ts` exports, values and types alike, read from its explicit lists. */
function indexExports(): Set<string> {
  const source = readFileSync(join(root, 'src', 'index.ts'), 'utf8')
  const names = new Set<string>()
  for (const [, list] of source.matchAll(/export (?:type )?\{([^}]*)\} from/g)) {
    for (const name of list!.split(',')) if (name.trim()) names.add(name.trim())
  }
  return names
}

/** The names the README's API table lists: the backticked identifiers of its first column. */
function readmeNames(): Set<string> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('\n## API\n'), readme.indexOf('\n## ', readme.indexOf('\n## API\n') + 1))
  const names = new Set<string>()
  for (const line of section.split('\n')) {
    if (!line.startsWith('| `')) continue
    const first = line.split('|')[1]!
    for (const [, name] of first.matchAll(/`([A-Za-z_$][\w$]*)`/g)) names.add(name!)
  }
  return names
}

test('src/index.ts exports by name: no export *', (t) => {
  t.notRegex(readFileSync(join(root, 'src', 'index.ts'), 'utf8'), /export \*/)
})

test("every name the README's API table lists is exported, and every export is listed", (t) => {
  const exported = indexExports()
  const listed = readmeNames()
  t.deepEqual([...listed].filter((name) => !exported.has(name)).sort(), [], 'listed in the README but not exported')
  t.deepEqual([...exported].filter((name) => !listed.has(name)).sort(), [], 'exported but not in the README')
})

test('the runtime exports are the value names of src/index.ts', (t) => {
  const exported = indexExports()
  const values = Object.keys(api)
  t.true(values.length > 20)
  t.deepEqual(values.filter((name) => !exported.has(name)), [])
})
