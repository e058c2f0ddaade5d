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
    // Until the packages are on the registry, both release tarballs must be installed
    // together; napi-rs's own message (wasm32-wasi, an npm bug link) does not say so.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const version = (require('../package.json') as { version: string }).version
    const message = supported
      ? `the facenet-torch native addon could not be loaded: the platform package ${PLATFORM_PACKAGE}@${version} is missing or broken ` +
        `(libtorch ${libtorch.version} from ${libtorch.torchDir} is fine). Install it beside facenet-torch: ` +
        `npm install ./facenet-torch-${version}.tgz ./${PLATFORM_PACKAGE}-${version}.tgz (the two release tarballs), ` +
        `or, from the registry, npm install --include=optional facenet-torch. Causes: ${causes.join(' <- ')}`
      : `facenet-torch has prebuilt binaries for linux-x64 (glibc) only, not ${process.platform}-${process.arch}; ` +
        `build from a clone with torch ${TORCH_VERSION} (see the README)`
    throw new NativeAddonError(message, { cause: error })
  }
}

export const binding: typeof Native = loadAddon()

export type { BindingModel, BindingModelInfo } from '../index'
