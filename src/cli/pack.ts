/** `facenet pack DIR OUT --size S`: an identity-folder dataset decoded once into images.npy + names.npy. */
import { z } from 'zod'
import { packImageFolder } from '../data/pack'
import { refuseOutputInInput } from './derived-names'
import { crop, EXIT, parseCommand, positiveInt, printHelp, SUMMARIES, type CommandSpec } from './options'
import { TRAINING } from '../tables/training'

const packSchema = z.strictObject({
  size: z.number().int().min(8).max(4096),
  centerCrop: crop.default(TRAINING.centerCrop.default),
  batchSize: positiveInt.default(256),
})

export const packSpec: CommandSpec<typeof packSchema> = {
  name: 'pack',
  summary: SUMMARIES.pack,
  usage: 'facenet pack DIR OUT --size S [--center-crop F]',
  positionals: { name: 'folders (DIR OUT)', min: 2, max: 2 },
  flags: {
    size: { kind: 'number', value: 'S', help: 'side of the square rows in pixels (e.g. the model input: 64 for tiny, 160 for nn3)' },
    centerCrop: { kind: 'number', value: 'F', help: `central fraction kept before resizing (default ${TRAINING.centerCrop.default})` },
    batchSize: { kind: 'number', value: 'N', help: 'images decoded per batch and per progress record (default 256)' },
  },
  schema: packSchema,
  notes: [
    'Writes OUT/images.npy (N×S×S×3 uint8), OUT/names.npy (identity of each row) and OUT/index.json',
    '(size, centre crop, source, skipped files); NpyDataset.open({ images, names }) and numpy read them.',
    'Images that cannot be decoded are left out and listed. Ctrl-C stops after the batch in flight;',
    'running the same command again resumes. Rows go to OUT/images.npy.partial until the pack is',
    'complete, then replace images.npy by rename. An OUT holding images.npy, names.npy or index.json',
    'that no earlier pack wrote (no OUT/pack.json) is refused.',
  ],
}

export async function packCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(packSpec, argv)
  if (parsed.help) return printHelp(packSpec)
  const [dir, out] = parsed.positionals as [string, string]
  // Packed into its own source, OUT would become one more identity folder of DIR.
  refuseOutputInInput(out, [dir], 'the pack')
  const { size, centerCrop, batchSize } = parsed.options
  const controller = new AbortController()
  const onSigint = () => controller.abort()
  process.once('SIGINT', onSigint)
  const started = Date.now()
  try {
    const result = await packImageFolder(dir, out, {
      size,
      centerCrop,
      batchSize,
      signal: controller.signal,
      onWarning: (error) => process.stderr.write(`\nskipped ${error.message}\n`),
      onProgress: (done, total) => {
        const rate = done / Math.max(1e-3, (Date.now() - started) / 1000)
        process.stderr.write(`\rpacked ${done}/${total} images (${rate.toFixed(0)}/s)`)
      },
    })
    process.stderr.write('\n')
    if (parsed.json) console.log(JSON.stringify(result))
    else {
      console.log(`${result.complete ? 'packed' : 'stopped at'} ${result.count} images of ${size}×${size} into ${out}${result.resumed ? ` (resumed after ${result.resumed})` : ''}`)
      if (result.skipped.length) console.log(`${result.skipped.length} image(s) skipped: ${result.skipped.map((s) => s.file).join(', ')}`)
      if (!result.complete) console.log('run the same command again to resume')
    }
    return result.complete ? EXIT.ok : EXIT.interrupted
  } finally {
    process.off('SIGINT', onSigint)
  }
}
