import test from 'ava'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(__dirname, '..')

/** The README's TypeScript examples, in order, importing the built package (dist/, the package's main) as a user would. */
function readmeExamples(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) =>
    match[1]!.replaceAll("from 'facenet-torch'", `from ${JSON.stringify(join(root, 'dist', 'index.js'))}`),
  )
}

test('every TypeScript example in the README runs as written', (t) => {
  const examples = readmeExamples()
  t.true(examples.length > 0)
  const dir = mkdtempSync(join(tmpdir(), 'facenet-readme-'))
  // As a new user runs them: plain .ts files in an `npm init -y` project, which is
  // CommonJS, where tsx refuses top-level await.
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-examples', version: '1.0.0', main: 'index.js', type: 'commonjs' }))
  examples.forEach((source, index) => {
    const file = join(dir, `example-${index}.ts`)
    writeFileSync(file, source)
    const run = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: root, encoding: 'utf8', timeout: 300_000 })
    t.is(run.status, 0, `README example ${index} failed:\n${source}\n--- stderr ---\n${run.stderr}`)
  })
})
