/**
 * Completes an aligned LFW folder: every image of SRC without a crop in DST (MTCNN found no
 * face) gets SRC's central FRACTION resized to SIZE, so both arms of the aligned-vs-centre
 * comparison are tested on the same pairs. Prints how many were filled.
 *
 *   npx tsx bench/fill-centre.ts data/lfw runs/lfw-aligned 160 0.7
 */
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { saveCrop } from '../src/align'
import { IDENTITY_TRANSFORM, preprocessImage, withCenterCrop } from '../src/data/preprocess'

async function main() {
  const [src, dst, sizeText, fractionText] = process.argv.slice(2)
  const size = Number(sizeText)
  const transform = withCenterCrop(IDENTITY_TRANSFORM, Number(fractionText))
  const filled: string[] = []
  for (const name of (await readdir(src!, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name)) {
    for (const file of (await readdir(join(src!, name))).filter((f) => f.endsWith('.jpg'))) {
      const out = join(dst!, name, file)
      if (await stat(out).then(() => true, () => false)) continue
      const pixels = await preprocessImage({ kind: 'file', path: join(src!, name, file) }, { height: size, width: size }, transform)
      await saveCrop(out, pixels, size)
      filled.push(`${name}/${file}`)
    }
  }
  console.log(JSON.stringify({ filled: filled.length, files: filled }))
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
