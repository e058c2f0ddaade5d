/**
 * Random augmentation of training images: the table `checkAugment` fills in and checks from,
 * and `facenet train` makes its flags of.
 */
import { InvalidArgumentError } from '../errors'
import { option, optionTable } from './table'

function within(test: (value: number) => boolean, range: string) {
  return (name: string, value: number): number => {
    if (typeof value !== 'number' || !test(value)) throw new InvalidArgumentError(`${name} must be ${range}, got ${String(value)}`)
    return value
  }
}

export const AUGMENT = optionTable({
  cropScale: option<number>({
    kind: 'number',
    default: 0.875,
    check: within((v) => v > 0 && v <= 1, 'in (0, 1]'),
    value: 'F',
    help: 'random crop side drawn from [F, 1] of the image, e.g. a 160 crop of a 183 resize; 1: no cropping',
  }),
  flip: option<boolean>({ kind: 'boolean', default: true, help: 'horizontal flip with probability ½', cli: { noFlag: '--no-augment turns it off with the rest' } }),
  maxRotation: option<number>({
    kind: 'number',
    default: 0,
    check: within((v) => v >= 0 && v <= 45, '0..45 degrees'),
    value: 'DEG',
    help: 'random rotation within ±DEG degrees; 0: off',
    cli: { aliases: [{ key: 'rotation' }] },
  }),
  brightness: option<number>({ kind: 'number', default: 0, check: within((v) => v >= 0 && v < 1, 'in [0, 1)'), value: 'X', help: 'random brightness factor within 1 ± X; 0: off' }),
})
