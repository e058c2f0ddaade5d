/**
 * Verification (LFW's protocol): the table `evaluate` and `evaluateVerification` fill in and
 * check from, and `facenet eval` makes its flags of.
 */
import { positiveInteger } from '../check'
import { InvalidArgumentError } from '../errors'
import { METRICS, type Metric } from '../options'
import { option, optionTable } from './table'

export const EVAL = optionTable({
  batchSize: option<number>({
    kind: 'number',
    default: 32,
    check: positiveInteger,
    value: 'N',
    help: 'images per forward pass',
  }),
  flip: option<boolean>({ kind: 'boolean', default: false, help: 'also embed mirrored images and average (test-time augmentation)' }),
  name: option<string>({ kind: 'string', default: 'model', value: 'NAME', help: 'name of the model in the report' }),
  folds: option<number>({ kind: 'number', default: 10, help: "folds of pairs without LFW's fold structure", cli: { noFlag: "eval takes the pairs file's folds (View 2), or 10 stratified folds of a View 1 file" } }),
  farTarget: option<number>({
    kind: 'number',
    default: 1e-3,
    check: (name, value) => {
      if (!(value > 0 && value < 1)) throw new InvalidArgumentError(`${name} must be in (0, 1), got ${String(value)}`)
      return value
    },
    value: 'FAR',
    help: 'the false accept rate VAL is reported at (the paper: 1e-3)',
  }),
  metric: option<Metric>({ kind: 'enum', values: METRICS, default: 'l2', help: 'how two embeddings are compared', cli: { noFlag: "eval compares as the model's stored threshold does" } }),
})
