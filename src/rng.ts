/**
 * A small seeded PRNG (sfc32, seeded through splitmix32), so that sampling and
 * augmentation are reproducible on any machine and can be resumed from a saved state.
 * `Math.random` can be neither seeded nor saved.
 */

/** The four 32-bit words of an {@link Rng}'s state. */
export type RngState = [number, number, number, number]

function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) | 0
  let z = state
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return [state, (z ^ (z >>> 16)) >>> 0]
}

export class Rng {
  #a: number
  #b: number
  #c: number
  #d: number

  /**
   * A generator seeded from one or more integers, e.g. `new Rng(seed, epoch, batch)`:
   * each combination gives an independent stream, so the stream for a batch does not
   * depend on how many numbers earlier batches drew.
   */
  constructor(...seeds: number[]) {
    let h = 0x2545f491
    for (const s of seeds) {
      // Mix both halves so that seeds above 2^32 still differ.
      const lo = s >>> 0
      const hi = Math.floor(s / 0x100000000) >>> 0
      h = Math.imul(h ^ lo, 0x9e3779b1) ^ Math.imul(hi + 0x632be5ab, 0x85ebca77)
      h = (h ^ (h >>> 15)) | 0
    }
    let st = h
    const words: number[] = []
    for (let i = 0; i < 4; i++) {
      const [next, out] = splitmix32(st)
      st = next
      words.push(out)
    }
    ;[this.#a, this.#b, this.#c, this.#d] = words as RngState
    // Warm up: sfc32's first outputs are weakly mixed.
    for (let i = 0; i < 12; i++) this.nextUint32()
  }

  static fromState(state: RngState): Rng {
    const rng = new Rng(0)
    ;[rng.#a, rng.#b, rng.#c, rng.#d] = state.map((v) => v >>> 0) as RngState
    return rng
  }

  state(): RngState {
    return [this.#a, this.#b, this.#c, this.#d]
  }

  nextUint32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0
    this.#d = (this.#d + 1) | 0
    this.#a = this.#b ^ (this.#b >>> 9)
    this.#b = (this.#c + (this.#c << 3)) | 0
    this.#c = (this.#c << 21) | (this.#c >>> 11)
    this.#c = (this.#c + t) | 0
    return t >>> 0
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 0x100000000
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next()
  }

  /** Uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    if (n <= 1) return 0
    const limit = 0x100000000 - (0x100000000 % n)
    let x = this.nextUint32()
    while (x >= limit) x = this.nextUint32()
    return x % n
  }

  /** Shuffles `array` in place (Fisher–Yates) and returns it. */
  shuffle<T extends { length: number; [i: number]: unknown }>(array: T): T {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const tmp = array[i]
      array[i] = array[j]
      array[j] = tmp
    }
    return array
  }
}
