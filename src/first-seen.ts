/** Numbers distinct values 0, 1, 2… in the order they are first met: an index into `values`. */
export class FirstSeen<T> {
  readonly values: T[] = []
  readonly #index = new Map<T, number>()

  /** The number of `value`; a value met for the first time gets the next one. */
  of(value: T): number {
    let at = this.#index.get(value)
    if (at === undefined) {
      at = this.values.length
      this.#index.set(value, at)
      this.values.push(value)
    }
    return at
  }
}
