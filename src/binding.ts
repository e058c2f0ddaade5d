/**
 * The native addon, loaded through the loader that `napi build` generates. Nothing
 * outside `src/` imports it: the public API wraps every `Binding*` type.
 */
import type * as Native from '../index'

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const binding: typeof Native = require('../index.js')

export type { BindingModel, BindingModelInfo } from '../index'
