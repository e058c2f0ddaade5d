// What `npm install` shows of the install-time setup (scripts/postinstall.js). npm ≥ 7
// pipes a lifecycle script's stderr and hides it when the script succeeds, so the
// script also writes its lines to the terminal npm runs in.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = join(__dirname, '..')
const hasScript = spawnSync('script', ['--version']).status === 0

;(hasScript ? test : test.skip)('postinstall lines reach the controlling terminal when npm pipes stderr, and stderr too', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'facenet-install-'))
  // Outside a clone, as installed (a clone's postinstall leaves the work to the build).
  copyFileSync(join(root, 'scripts', 'postinstall.js'), join(dir, 'postinstall.js'))
  // util-linux `script` gives the child a terminal and records what is written to it;
  // stderr goes to a file, as npm's pipe would take it.
  const run = spawnSync('script', ['-q', '-e', '-c', `${JSON.stringify(process.execPath)} postinstall.js 2>stderr.txt`, 'terminal.txt'], {
    cwd: dir,
    env: { ...process.env, FACENET_TORCH_SKIP_SETUP: '1' },
    stdio: ['ignore', 'ignore', 'ignore'],
  })
  t.is(run.status, 0)
  const line = /facenet-torch: FACENET_TORCH_SKIP_SETUP is set/
  t.regex(readFileSync(join(dir, 'stderr.txt'), 'utf8'), line)
  t.regex(readFileSync(join(dir, 'terminal.txt'), 'utf8'), line)
})
