/**
 * What a training run shows in TensorBoard, and under which tags: the trainer hands over its
 * step statistics and validations, this module names and writes them.
 */
import sharp from 'sharp'
import type { BindingStepStats } from '../../index'
import type { VerificationResult } from '../eval/verification'
import { renderVegaLite, rocSpec } from '../report/plots'
import { EventWriter, writeProjector, type ProjectorSample } from './tensorboard'

/** What one step reported, beside the statistics the binding returned. */
export interface BoardStep {
  step: number
  stats: BindingStepStats
  /** The phase of the step trained the triplet loss / a classification loss. */
  triplet: boolean
  classification: boolean
  activeTriplets: number
  imagesPerSecond: number
  dataWaitMs: number
}

export class TrainingBoard {
  readonly #events: EventWriter
  readonly #warn: (message: string) => void
  readonly dir: string

  private constructor(dir: string, events: EventWriter, warn: (message: string) => void) {
    this.dir = dir
    this.#events = events
    this.#warn = warn
  }

  /** A new event file in `dir`; `startStep` is the first step this run trains. */
  static async open(dir: string, startStep: number, warn: (message: string) => void): Promise<TrainingBoard> {
    return new TrainingBoard(dir, await EventWriter.open(dir, startStep, warn), warn)
  }

  get file(): string {
    return this.#events.file
  }

  /** The run's configuration on the Text tab, as indented (code-block) JSON. */
  config(step: number, config: unknown): void {
    const json = JSON.stringify(config, null, 2)
    this.#events.text(step, 'config', json.split('\n').map((line) => `    ${line}`).join('\n'))
  }

  step(s: BoardStep): void {
    const { stats, step } = s
    this.#events.scalars(step, {
      'loss/total': stats.loss,
      // A part the step's phase does not train would chart as a misleading 0.
      ...(s.triplet ? { 'loss/triplet': stats.tripletLoss } : {}),
      ...(s.classification ? { 'loss/class': stats.classLoss } : {}),
      ...(s.triplet
        ? {
            'triplets/active': s.activeTriplets,
            'triplets/active_fraction': stats.mining.activeFraction,
            'triplets/mined': stats.mining.triplets,
            'triplets/no_semi_hard_fraction': stats.mining.noSemiHardFraction,
            'distances/mean_positive': stats.mining.meanAp,
            'distances/mean_negative': stats.mining.meanAn,
          }
        : {}),
      'distances/mean_pairwise': stats.meanPairwiseDistance,
      'train/learning_rate': stats.lr,
      'train/grad_norm': stats.gradNorm,
      'train/images_per_second': s.imagesPerSecond,
      'train/data_wait_ms': s.dataWaitMs,
    })
    const d = stats.distributions
    if (d) {
      this.#events.histograms(step, {
        'embeddings/norm': d.embeddingNorms,
        'distances/positive': d.positiveDistances,
        'distances/negative': d.negativeDistances,
      })
    }
  }

  /**
   * A validation at `step`: its scalars and pair-distance histograms, its ROC as an image and,
   * with `sample`, the projector's files. A plot or a projector file that cannot be made is
   * reported through `warn`, as a failed event write is; training goes on.
   */
  async validation(step: number, v: VerificationResult, sample: ProjectorSample | undefined): Promise<void> {
    this.#events.scalars(step, {
      'validation/accuracy': v.accuracy.mean,
      'validation/accuracy_std': v.accuracy.std,
      [`validation/val_at_far_${v.val.farTarget}`]: v.val.mean,
      'validation/far': v.far.mean,
      'validation/auc': v.auc,
      'validation/eer': v.eer,
      'validation/threshold': v.threshold,
    })
    const same: number[] = []
    const different: number[] = []
    v.distances.forEach((distance, i) => (v.same[i] ? same : different).push(distance))
    this.#events.histograms(step, { 'validation/distance_same': same, 'validation/distance_different': different })
    try {
      const { png } = await renderVegaLite(rocSpec([{ name: `step ${step}`, roc: v.roc, auc: v.auc }]), { width: 360, height: 300, scale: 1 })
      const { width, height, channels } = await sharp(png).metadata()
      this.#events.image(step, 'validation/roc', png, width, height, channels === 3 ? 3 : 4)
    } catch (error) {
      this.#warn(`the ROC of step ${step} could not be drawn for TensorBoard (${(error as Error).message})`)
    }
    if (sample) {
      try {
        await writeProjector(this.dir, sample)
      } catch (error) {
        this.#warn((error as Error).message)
      }
    }
  }

  close(): void {
    this.#events.close()
  }
}
