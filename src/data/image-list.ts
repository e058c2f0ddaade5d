import { resolve } from 'node:path'
import { InvalidArgumentError } from '../errors'
import { regularFileSize } from '../regular-file'
import type { ImageInput, ImageSource } from './source'

/**
 * A plain list of image files as an {@link ImageSource}, e.g. the images an LFW pairs file
 * references. Identities are taken from `labels` when given, else every image is its own.
 */
export class ImageList implements ImageSource {
  readonly paths: readonly string[]
  readonly identities: readonly string[]
  readonly labels: Int32Array

  constructor(paths: readonly string[], identities?: readonly string[]) {
    if (identities && identities.length !== paths.length) {
      throw new InvalidArgumentError(`ImageList: ${paths.length} paths but ${identities.length} identities`)
    }
    this.paths = paths.map((p) => resolve(p))
    const names = identities ?? this.paths
    const known = [...new Set(names)].sort()
    const index = new Map(known.map((name, i) => [name, i]))
    this.identities = known
    this.labels = Int32Array.from(names, (name) => index.get(name)!)
  }

  get length(): number {
    return this.paths.length
  }

  /**
   * Paths given one by one were never listed as a folder's files: one may be a FIFO or a
   * device, which the decoder would read without end. Each is checked here, when read.
   */
  async input(index: number): Promise<ImageInput> {
    const path = this.paths[index]
    if (path === undefined) throw new InvalidArgumentError(`image index ${index} is outside 0..${this.paths.length - 1}`)
    await regularFileSize(path)
    return { kind: 'file', path }
  }
}
