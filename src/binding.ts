/**
 * The native addon, loaded through the loader that `napi build` generates, after
 * `libtorch.ts` has found and preloaded libtorch. Nothing outside `src/` imports it: the
 * public API wraps every `Binding*` type.
 */
import type * as Native from '../index'
import { NativeAddonError } from './errors'
import { loadLibtorch, TORCH_VERSION } from './libtorch'

const PLATFORM_PACKAGE = `facenet-torch-${process.platform}-${process.arch}-gnu`

function loadAddon(): typeof Native {
  const libtorch = loadLibtorch()
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('../index.js') as typeof Native
  } catch (error) {
    // napi-rs's loader reports a missing or unloadable .node as "Cannot find native
    // binding", with the real causes chained; say which package is missing instead.
    const causes: string[] = []
    for (let cause: unknown = error; cause instanceof Error; cause = cause.cause) causes.push(cause.message.split('\n')[0]!)
    const supported = process.platform === 'linux' && process.arch === 'x64'
    const message = supported
      ? `the facenet-torch native addon could not be loaded (package ${PLATFORM_PACKAGE}, libtorch ${libtorch.version} ` +
        `from ${libtorch.torchDir}). Reinstall with optional dependencies enabled (npm install --include=optional facenet-torch). ` +
        `Causes: ${causes.join(' <- ')}`
      : `facenet-torch has prebuilt binaries for linux-x64 (glibc) only, not ${process.platform}-${process.arch}; ` +
        `build from a clone with torch ${TORCH_VERSION} (see the README)`
    throw new NativeAddonError(message, { cause: error })
  }
}

export const binding: typeof Native = loadAddon()

export type { BindingModel, BindingModelInfo } from '../index'
