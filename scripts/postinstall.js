#!/usr/bin/env node
// `npm install facenet-torch` runs this once the package is unpacked: it finds libtorch
// (torch==2.11.0) or installs it from PyPI into the per-user cache, once per machine (see
// src/setup.ts). It never fails the install: a machine without Python or network still
// gets the package, and `npx facenet setup` finishes the job later. Set
// FACENET_TORCH_SKIP_SETUP=1 to skip it (Docker layers, CI caches).
'use strict'
// Plain CommonJS on purpose: it runs before anything is built or transpiled.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs')
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { join } = require('node:path')
const { existsSync } = fs

const root = join(__dirname, '..')

// npm ≥ 7 shows a successful install script's output only with --foreground-scripts, so a
// user would watch a 530 MB download in silence. The terminal npm runs in still shows what
// is written to it directly; where stderr is that terminal already, once is enough.
function openTerminal() {
  if (process.stderr.isTTY) return undefined
  try {
    return fs.openSync('/dev/tty', 'w')
  } catch {
    return undefined // no controlling terminal (CI, Docker builds): stderr only
  }
}
const terminal = openTerminal()
const say = (line) => {
  const text = `facenet-torch: ${line}\n`
  process.stderr.write(text)
  if (terminal !== undefined) {
    try {
      fs.writeSync(terminal, text)
    } catch {
      // the terminal went away; stderr still has it
    }
  }
}

function main() {
  if (/^(1|true|yes)$/i.test(process.env.FACENET_TORCH_SKIP_SETUP ?? '')) {
    say("FACENET_TORCH_SKIP_SETUP is set: libtorch not provisioned; run 'npx facenet setup' when needed")
    return Promise.resolve()
  }
  // In a clone, `prepare` (scripts/build.mjs) provisions libtorch for the build instead.
  if (existsSync(join(root, 'crates')) || !existsSync(join(root, 'dist', 'setup.js'))) return Promise.resolve()
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { setupLibtorch } = require(join(root, 'dist', 'setup.js'))
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { describeTorch } = require(join(root, 'dist', 'libtorch.js'))
  const started = Date.now()
  // pip prints nothing while it downloads: a heartbeat says the install is alive.
  const heartbeat = setInterval(() => say(`still setting up torch (${Math.round((Date.now() - started) / 1000)} s)…`), 15_000)
  return setupLibtorch({ log: (line) => say(line.trim()) }).finally(() => clearInterval(heartbeat)).then(
    (report) => {
      const { location } = report
      say(`${report.status === 'found' ? 'using' : 'installed'} ${describeTorch(location)} at ${location.torchDir}`)
    },
    (error) => {
      say(`${error.message}`)
      say("the package is installed, but cannot run until libtorch is there: run 'npx facenet setup'")
    },
  )
}

main()
  .catch((error) => say(`setup crashed: ${error && error.stack ? error.stack : error}`))
  .finally(() => {
    process.exitCode = 0
  })
