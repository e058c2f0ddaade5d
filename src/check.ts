/**
 * The checks of numbers at the public boundary, each written once. Values checked here
 * travel on unchecked: the binding and the core trust what the TS layer hands them.
 */
import { InvalidArgumentError, ShapeError } from './errors'
import type { ImageBatch } from './model'

/** The most libtorch threads a model's or detector's worker takes (the binding refuses more). */
export const MAX_THREADS = 1024

/** A seed: any non-negative integer that a double holds exactly. */
export function checkSeed(value: unknown, name = 'seed'): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer, got ${String(value)}`)
  return value as number
}

export function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be an integer ≥ 1, got ${String(value)}`)
  return value
}

/** `threads` as every worker takes it, or the CPU count (capped at {@link MAX_THREADS}). */
export function threadCount(value: number | undefined, fallback: number): number {
  return integerIn('threads', value ?? Math.min(fallback, MAX_THREADS), 1, MAX_THREADS)
}

export function integerIn(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
  return value
}

export function nonNegative(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new InvalidArgumentError(`${name} must be a finite number ≥ 0, got ${String(value)}`)
  }
  return value
}

/** The largest float32: rates and coefficients meet float32 weights, and larger ones overflow in libtorch. */
export const FLOAT32_MAX = 3.4028234663852886e38

/**
 * A rate or coefficient within float32's range (its other bounds are checked where it is
 * used, natively): a finite but larger value passes as "valid" and then fails deep inside
 * libtorch as "Internal torch error … overflow".
 */
export function float32(name: string, value: number): number {
  if (typeof value === 'number' && Math.abs(value) > FLOAT32_MAX && Number.isFinite(value)) {
    throw new InvalidArgumentError(`${name} must be at most ${FLOAT32_MAX.toExponential(2)} (float32's largest), got ${String(value)}`)
  }
  return value
}

/**
 * An N×H×W×3 pixel batch as `embed` and `detect` take it: a Uint8Array or Float32Array, and
 * a shape of four whole numbers that fit the binding's 32-bit counts (1.5 or 2³² + 1 would
 * be truncated there) with 3 channels. The values' count is the binding's to check.
 */
export function checkImageBatch(images: unknown): ImageBatch {
  const batch = images as ImageBatch | null | undefined
  if (typeof batch !== 'object' || batch === null || !(batch.data instanceof Uint8Array || batch.data instanceof Float32Array)) {
    throw new InvalidArgumentError(`images must be { data: Uint8Array | Float32Array, shape: [N, H, W, 3] }, got ${batch === null ? 'null' : Array.isArray(batch) ? 'an array' : typeof batch}`)
  }
  const shape: unknown = batch.shape
  if (!Array.isArray(shape) || shape.length !== 4) throw new ShapeError(`images.shape must be [N, H, W, 3], got ${JSON.stringify(shape) ?? String(shape)}`)
  for (const dim of shape) {
    if (!Number.isInteger(dim) || (dim as number) < 0 || (dim as number) > 0xffffffff) {
      throw new ShapeError(`images.shape must hold non-negative integers below 2^32, got [${shape.join(', ')}]`)
    }
  }
  if (shape[3] !== 3) throw new ShapeError(`images must have 3 channels (RGB, channels last), got shape [${shape.join(', ')}]`)
  return batch
}
