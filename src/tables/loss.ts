/**
 * What training minimizes: the table the loss phases are filled in and checked from, and
 * `facenet train` makes its flags of. A phase's fields (`margin`, `scale`, …) apply to some
 * loss types only; `resolveLoss` holds which.
 */
import { nonNegative } from '../check'
import { LOSSES, REDUCERS, type LossType, type Reducer } from '../options'
import { MINING } from './mining'
import { option, optionTable } from './table'

/** The margin m of the classification losses when none is given: insightface's. */
export const MARGIN_OF_LOSS = { arcface: 0.5, cosface: 0.4 } as const

export const LOSS = optionTable({
  loss: option<LossType>({
    kind: 'enum',
    values: LOSSES,
    default: 'triplet',
    help: 'loss (the type of the loss option); the others train a class-weight matrix over the identities, kept out of model.safetensors',
  }),
  margin: option<number>({
    kind: 'number',
    defaultText: `triplet α ${MINING.margin.default}, ArcFace m ${MARGIN_OF_LOSS.arcface} rad, CosFace m ${MARGIN_OF_LOSS.cosface}`,
    value: 'X',
    help: 'margin of the loss: triplet α, ArcFace m in radians in [0, π/2), CosFace m in [0, 1]',
  }),
  scale: option<number>({ kind: 'number', default: 64, value: 'S', help: 'ArcFace/CosFace logit scale s' }),
  easyMargin: option<boolean>({ kind: 'boolean', default: false, help: "ArcFace: the margin only where cos θ > 0 (off: insightface's cos θ − m·sin m past π − m)" }),
  centerWeight: option<number>({ kind: 'number', default: 0.01, check: nonNegative, value: 'X', help: 'softmax-center: weight λ of the centre loss' }),
  tripletWeight: option<number>({ kind: 'number', default: 0, check: nonNegative, value: 'W', help: 'with a classification loss: add W × the triplet loss (P×K batches then)' }),
  reducer: option<Reducer>({ kind: 'enum', values: REDUCERS, default: 'mean', help: 'loss over the triplets (mean-active: over those with a positive loss)' }),
  normalize: option<boolean>({ kind: 'boolean', default: true, help: 'L2-normalize the embeddings before the triplet loss', cli: { noFlag: 'training always normalizes (the paper)' } }),
})
