/**
 * What training minimizes: the paper's triplet loss, a classification loss over a class-weight
 * matrix (ArcFace, CosFace, softmax + centre loss), a weighted sum of the two, and the steps
 * where that changes. The options are checked here and handed to the core as phases.
 */
import { checkKeys, InvalidArgumentError } from '../errors'
import { LOSSES, oneOf, type LossType } from '../options'
import { LOSS, MARGIN_OF_LOSS } from '../tables/loss'
import { resolveOption } from '../tables/table'

export type { LossType } from '../options'

/** The paper's objective: the triplet loss over triplets mined in P×K batches. */
export interface TripletObjective {
  type: 'triplet'
}

/**
 * ArcFace (`s·cos(θ_y + m)`, Deng et al. 2019) or CosFace (`s·(cos θ_y − m)`, Wang et al. 2018)
 * over a class-weight matrix (one row per identity of the data) trained with the network and
 * checkpointed with it, but not part of the exported model.
 */
export interface MarginLossOptions {
  type: 'arcface' | 'cosface'
  /** ArcFace: the angular margin in radians, in [0, π/2); default `0.5`. CosFace: the cosine margin, in [0, 1]; default `0.4` (insightface's). */
  margin?: number
  /** The logit scale s. Default `64` (insightface's). */
  scale?: number
  /**
   * ArcFace only. Where θ_y + m passes π, cos(θ_y + m) would rise again and reward a worse
   * angle. `false` (default, insightface's): use cos θ_y − m·sin m there. `true`: apply the
   * margin only where cos θ_y > 0.
   */
  easyMargin?: boolean
  /** Adds this weight × the triplet loss (then mined in P×K batches) to the loss. Default `0`: the margin loss alone, on shuffled batches of `batchSize`. */
  tripletWeight?: number
}

/** Softmax cross-entropy over `x·Wᵀ` plus `centerWeight`·½‖x − c_y‖² to learned class centres (Wen et al. 2016). */
export interface SoftmaxCenterOptions {
  type: 'softmax-center'
  /** λ of the centre loss. Default `0.01`. */
  centerWeight?: number
  /** As for {@link MarginLossOptions.tripletWeight}. Default `0`. */
  tripletWeight?: number
}

export type LossOptions = TripletObjective | MarginLossOptions | SoftmaxCenterOptions

/** One phase of a loss schedule: its loss from `fromStep` (0-based; the first phase's is 0) until the next phase's. */
export type LossPhaseOptions = LossOptions & { fromStep?: number }

/** A phase with every field filled in, as checkpoints and `config.json` record it. */
export interface ResolvedLossPhase {
  fromStep: number
  type: LossType
  margin: number
  scale: number
  easyMargin: boolean
  centerWeight: number
  /** 1 for `'triplet'`. */
  tripletWeight: number
}


const KEYS: Record<LossType, readonly string[]> = {
  triplet: ['type', 'fromStep'],
  arcface: ['type', 'fromStep', 'margin', 'scale', 'easyMargin', 'tripletWeight'],
  cosface: ['type', 'fromStep', 'margin', 'scale', 'tripletWeight'],
  'softmax-center': ['type', 'fromStep', 'centerWeight', 'tripletWeight'],
}

function inRange(name: string, value: unknown, lo: number, hi: number, hiOpen: boolean): number {
  const ok = typeof value === 'number' && Number.isFinite(value) && value >= lo && (hiOpen ? value < hi : value <= hi)
  if (!ok) throw new InvalidArgumentError(`${name} must be a number in [${lo}, ${hiOpen ? `${hi.toFixed(4)})` : `${hi}]`}, got ${String(value)}`)
  return value
}

function resolvePhase(phase: LossPhaseOptions, where: string, fromStep: number): ResolvedLossPhase {
  if (typeof phase !== 'object' || phase === null) throw new InvalidArgumentError(`${where} must be an object with a type, got ${String(phase)}`)
  const type = oneOf(`${where}.type`, phase.type, LOSSES)
  checkKeys(where, phase, KEYS[type])
  const o = phase as { margin?: number; scale?: number; easyMargin?: boolean; centerWeight?: number; tripletWeight?: number }
  const tripletWeight = type === 'triplet' ? 1 : resolveOption(LOSS, 'tripletWeight', o, `${where}.tripletWeight`)
  const margin =
    type === 'arcface'
      ? inRange(`${where}.margin`, o.margin ?? MARGIN_OF_LOSS.arcface, 0, Math.PI / 2, true)
      : type === 'cosface'
        ? inRange(`${where}.margin`, o.margin ?? MARGIN_OF_LOSS.cosface, 0, 1, false)
        : 0
  const scale = type === 'arcface' || type === 'cosface' ? inRange(`${where}.scale`, resolveOption(LOSS, 'scale', o), Number.MIN_VALUE, 1e4, false) : 0
  const centerWeight = type === 'softmax-center' ? resolveOption(LOSS, 'centerWeight', o, `${where}.centerWeight`) : 0
  if (o.easyMargin !== undefined && typeof o.easyMargin !== 'boolean') throw new InvalidArgumentError(`${where}.easyMargin must be a boolean, got ${String(o.easyMargin)}`)
  return { fromStep, type, margin, scale, easyMargin: resolveOption(LOSS, 'easyMargin', o), centerWeight, tripletWeight }
}

/** The `loss` option as phases; the default is the triplet loss from step 0. */
export function resolveLoss(loss: LossOptions | readonly LossPhaseOptions[] | undefined): ResolvedLossPhase[] {
  if (loss === undefined) return [resolvePhase({ type: LOSS.loss.default as LossType }, 'loss', 0)]
  if (!Array.isArray(loss)) {
    const single = loss as LossPhaseOptions
    if (single.fromStep !== undefined && single.fromStep !== 0) throw new InvalidArgumentError(`loss.fromStep must be 0 for a single loss, got ${String(single.fromStep)}`)
    return [resolvePhase(single, 'loss', 0)]
  }
  if (loss.length === 0) throw new InvalidArgumentError('loss must name at least one phase')
  let previous = -1
  return loss.map((phase, i) => {
    const where = `loss[${i}]`
    const fromStep = i === 0 ? (phase?.fromStep ?? 0) : phase?.fromStep
    if (!Number.isSafeInteger(fromStep) || fromStep! < 0) throw new InvalidArgumentError(`${where}.fromStep must be an integer ≥ 0${i > 0 ? ' (every phase after the first needs one)' : ''}, got ${String(fromStep)}`)
    if (i === 0 && fromStep !== 0) throw new InvalidArgumentError(`loss[0].fromStep must be 0, got ${fromStep}`)
    if (fromStep! <= previous) throw new InvalidArgumentError(`${where}.fromStep must be above the previous phase's ${previous}, got ${fromStep}`)
    previous = fromStep!
    return resolvePhase(phase, where, fromStep!)
  })
}

/** The phase step `step` (0-based) trains with. */
export function phaseAt(phases: readonly ResolvedLossPhase[], step: number): ResolvedLossPhase {
  let found = phases[0]!
  for (const phase of phases) if (phase.fromStep <= step) found = phase
  return found
}

/** Whether the phase's batches must be P×K ones: it mines triplets. */
export function usesTriplets(phase: ResolvedLossPhase): boolean {
  return phase.tripletWeight > 0
}

/** Whether any phase trains a class head, whose rows are the identities of the data. */
export function classifies(phases: readonly ResolvedLossPhase[]): boolean {
  return phases.some((p) => p.type !== 'triplet')
}

/** The phases as the binding's `configureTraining` takes them. */
export function bindingPhases(phases: readonly ResolvedLossPhase[]) {
  return phases.map((p) => ({ fromStep: p.fromStep, loss: p.type, tripletWeight: p.tripletWeight, margin: p.margin, scale: p.scale, easyMargin: p.easyMargin, centerWeight: p.centerWeight }))
}

/**
 * The class index of each identity label (the labels sorted, then numbered), so that any
 * labels, however sparse, address the rows of the class head.
 */
export function classIndex(labels: Int32Array): Map<number, number> {
  const sorted = [...new Set(labels)].sort((a, b) => a - b)
  return new Map(sorted.map((label, i) => [label, i]))
}
