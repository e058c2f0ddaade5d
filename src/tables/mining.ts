/**
 * Triplet selection: the table `mineTriplets` and the trainer fill in and check mining
 * options from, and `facenet train` makes its flags of.
 */
import { float32, integerIn, nonNegative } from '../check'
import { DISTANCES, FALLBACKS, MINERS, MINING_MODES, NEGATIVE_CHOICES, type MiningMode, type MinerName, type NegativeChoice, type Fallback, type DistanceName } from '../options'
import { option, optionTable } from './table'

export const MINING = optionTable({
  mining: option<MiningMode>({
    kind: 'enum',
    values: MINING_MODES,
    default: 'online',
    help: "triplets from: online: mined in each P×K batch (the paper); epoch: the notebook's per-epoch list over the whole set",
  }),
  miner: option<MinerName>({ kind: 'enum', values: MINERS, default: 'semi-hard', help: "online miner (semi-hard is the paper's; epoch mining is semi-hard only)" }),
  margin: option<number>({
    kind: 'number',
    default: 0.2,
    check: (name, value) => float32(name, nonNegative(name, value)),
    value: 'X',
    help: 'triplet margin α (semi-hard window, hinge)',
    cli: { noFlag: "facenet train sets it with --margin (--loss triplet) or --triplet-margin (beside a classification loss)" },
  }),
  choice: option<NegativeChoice>({ kind: 'enum', values: NEGATIVE_CHOICES, default: 'random', help: 'semi-hard: which of several qualifying negatives to take' }),
  fallback: option<Fallback>({ kind: 'enum', values: FALLBACKS, default: 'nearest-farther-else-farthest', help: "semi-hard: what a pair without a semi-hard negative gets (TensorFlow Addons' rule by default)" }),
  distance: option<DistanceName>({ kind: 'enum', values: DISTANCES, default: 'squared-l2', help: 'how embeddings are compared in mining and the loss' }),
  chunk: option<number>({
    kind: 'number',
    default: 1024,
    check: (name, value) => integerIn(name, value, 1, 1 << 20),
    value: 'N',
    help: "anchors per step of 'epoch' mining (memory chunk × N)",
    cli: { noFlag: 'an option of mineTriplets only' },
  }),
})
