/**
 * The checks of numbers at the public boundary, each written once. Values checked here
 * travel on unchecked: the binding and the core trust what the TS layer hands them.
 */
import { InvalidArgumentError } from './errors'

/** A seed: any non-negative integer that a double holds exactly. */
export function checkSeed(value: unknown, name = 'seed'): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer, got ${String(value)}`)
  return value as number
}

export function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be an integer ≥ 1, got ${String(value)}`)
  return value
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
