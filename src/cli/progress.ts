import type { StepResult } from '../training/trainer'

export interface ProgressOptions {
  /** Total epochs of the run. */
  epochs: number
  /** Batches per epoch, when the sampler knows it (online mining). */
  stepsPerEpoch?: number
  /** The run stops at this many steps in total. */
  maxSteps?: number
  /** The run stops after this many seconds. */
  maxSeconds?: number
  /** Step the run starts from (a resumed run's checkpoint step). */
  startStep: number
  stream?: NodeJS.WriteStream
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--'
  const s = Math.max(0, Math.round(seconds))
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const pad = (n: number) => String(n).padStart(2, '0')
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${pad(m)}:${pad(s % 60)}`
}

/**
 * A one-line training progress bar on stderr: epoch and step, loss, active triplets,
 * images/s and ETA. On a terminal it redraws in place; otherwise (a pipe, a log file) it
 * prints a line every few seconds, so logs stay short.
 */
export class ProgressBar {
  readonly #o: ProgressOptions
  readonly #stream: NodeJS.WriteStream
  readonly #tty: boolean
  readonly #started = Date.now()
  #lastDraw = 0
  #loss = NaN
  #rate = NaN
  #drawn = false

  constructor(options: ProgressOptions) {
    this.#o = options
    this.#stream = options.stream ?? process.stderr
    this.#tty = this.#stream.isTTY === true
  }

  /** The step the run will end at, if the bounds say. */
  #totalSteps(): number | undefined {
    const { epochs, stepsPerEpoch, maxSteps } = this.#o
    const byEpochs = stepsPerEpoch ? epochs * stepsPerEpoch : undefined
    if (byEpochs === undefined) return maxSteps
    return maxSteps === undefined ? byEpochs : Math.min(byEpochs, maxSteps)
  }

  step(s: StepResult): void {
    // Exponential averages: per-step loss and speed are too noisy to read.
    this.#loss = Number.isNaN(this.#loss) ? s.loss : 0.9 * this.#loss + 0.1 * s.loss
    this.#rate = Number.isNaN(this.#rate) ? s.imagesPerSecond : 0.9 * this.#rate + 0.1 * s.imagesPerSecond
    const now = Date.now()
    if (now - this.#lastDraw < (this.#tty ? 100 : 5000)) return
    this.#lastDraw = now
    this.#draw(s)
  }

  #draw(s: StepResult): void {
    const total = this.#totalSteps()
    const elapsed = (Date.now() - this.#started) / 1000
    const done = s.step - this.#o.startStep
    const perStep = done > 0 ? elapsed / done : NaN
    let eta = total !== undefined ? (total - s.step) * perStep : Infinity
    if (this.#o.maxSeconds !== undefined) eta = Math.min(eta, this.#o.maxSeconds - elapsed)
    // Whichever bound ends the run first decides how full the bar is.
    const fraction = Math.max(total !== undefined ? s.step / total : 0, this.#o.maxSeconds ? elapsed / this.#o.maxSeconds : 0)
    const width = 20
    const filled = Math.max(0, Math.min(width, Math.round(fraction * width)))
    const bar = `[${'='.repeat(filled)}${filled < width ? '>' : ''}${' '.repeat(Math.max(0, width - filled - 1))}]`
    const epochs = `epoch ${s.epoch + 1}/${this.#o.epochs}`
    const steps = `step ${s.step}${total !== undefined ? `/${total}` : ''}`
    const active = `active ${s.activeTriplets}/${s.triplets}`
    const line = `${epochs} ${steps} ${bar} loss ${this.#loss.toFixed(4)} ${active} ${this.#rate.toFixed(0)} img/s ETA ${clock(eta)}`
    if (this.#tty) {
      this.#stream.write(`\r${line}\x1b[K`)
      this.#drawn = true
    } else {
      this.#stream.write(`${line}\n`)
    }
  }

  /** A line that must not be overwritten (an epoch summary, a warning). */
  log(message: string): void {
    if (this.#tty && this.#drawn) this.#stream.write('\r\x1b[K')
    this.#drawn = false
    this.#stream.write(`${message}\n`)
    this.#lastDraw = 0
  }

  /** Leaves the last bar on screen and moves to a new line. */
  end(): void {
    if (this.#tty && this.#drawn) this.#stream.write('\n')
    this.#drawn = false
  }
}
