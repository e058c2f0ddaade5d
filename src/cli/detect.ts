/** `facenet detect PHOTO...`: MTCNN faces of each photo, optionally drawn for a person to look at. */
import { mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import sharp from 'sharp'
import { z } from 'zod'
import { DETECT_BOUNDS, FaceDetector, type DetectedFace, type DetectOptions } from '../detect'
import { DETECT } from '../tables/detect'
import type { Device } from '../device'
import { ON_BAD_IMAGE, type OnBadImage } from '../options'
import { DataError } from '../errors'
import { deviceSchema, EXIT, parseCommand, positiveInt, printHelp, SUMMARIES, type CommandSpec } from './options'
import { flagsOf, schemaOf, setIn } from './table-flags'
import { drawnPaths } from './derived-names'
import { ALIGN } from '../tables/align'

const schema = z.strictObject({
  draw: z.string().min(1).optional(),
  ...schemaOf(DETECT),
  device: deviceSchema.default('auto'),
  threads: positiveInt.max(DETECT_BOUNDS.threads.max).optional(),
  onBadImage: z.enum(ON_BAD_IMAGE).default(ALIGN.onBadImage.default as OnBadImage),
}) as z.ZodObject<Record<string, z.ZodType>>

/** The options as `detect` reads them (zod's inferred type is too wide for a generated shape). */
type DetectFlags = { draw?: string; device: string; threads?: number; onBadImage: OnBadImage } & DetectOptions

export const detectSpec: CommandSpec<typeof schema> = {
  name: 'detect',
  summary: SUMMARIES.detect,
  usage: 'facenet detect PHOTO... [--draw OUT.png] [--min-face-size PX] [--thresholds P,R,O]',
  positionals: { name: 'photos', min: 1 },
  flags: {
    draw: { kind: 'string', value: 'OUT', help: 'draw boxes, landmarks and scores: a PNG file for one photo, a folder (PHOTO-NAME.png each) for several' },
    ...flagsOf(DETECT),
    device: { kind: 'string', value: 'DEV', help: "'auto' (default: the first CUDA GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'" },
    threads: { kind: 'number', value: 'N', help: `libtorch threads, 1 to ${DETECT_BOUNDS.threads.max} (default: the CPU count)` },
    onBadImage: { kind: 'string', value: 'WHAT', help: "'error' (default): report an unreadable photo, go on with the others, exit 1; 'skip': report it and exit 0" },
  },
  schema,
  notes: [
    'Prints one line per face: box x1,y1,x2,y2, score, and the 5 landmarks (eyes, nose, mouth corners).',
    'A photo without a face prints "no face"; it is not an error.',
    'An unreadable photo is reported on stderr (and with --json as {"file", "error": {"code", "message"}}); the other photos are still detected.',
  ],
}

const xml = (text: string): string => text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`)

/**
 * An SVG the size of the photo with each face's box, landmarks and label (default: its
 * number and score), for sharp to composite.
 */
function overlay(width: number, height: number, faces: readonly DetectedFace[], labels?: readonly string[]): Buffer {
  const stroke = Math.max(2, Math.round(Math.min(width, height) / 200))
  const shapes = faces.flatMap((face, k) => {
    const [x1, y1, x2, y2] = face.box
    const side = Math.max(x2 - x1, y2 - y1)
    const radius = Math.max(stroke, side / 40)
    const font = Math.max(10, Math.round(side / 7))
    const label = xml(labels?.[k] ?? `${k + 1}: ${face.score.toFixed(3)}`)
    return [
      `<rect x="${x1}" y="${y1}" width="${x2 - x1}" height="${y2 - y1}" fill="none" stroke="#00ff66" stroke-width="${stroke}"/>`,
      ...face.landmarks.map(([x, y], p) => `<circle cx="${x}" cy="${y}" r="${radius}" fill="${p < 2 ? '#ff3355' : p === 2 ? '#ffdd00' : '#33aaff'}"/>`),
      `<text x="${x1}" y="${Math.max(font, y1 - stroke)}" font-family="sans-serif" font-size="${font}" fill="#00ff66" stroke="#000" stroke-width="${Math.max(1, font / 12)}" paint-order="stroke">${label}</text>`,
    ]
  })
  return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">${shapes.join('')}</svg>`)
}

/** Writes `photo` (EXIF-oriented, as detection saw it) with its faces drawn on, as PNG. */
export async function drawFaces(photo: string, faces: readonly DetectedFace[], out: string, labels?: readonly string[]): Promise<void> {
  const image = sharp(photo, { limitInputPixels: false }).autoOrient()
  const { data, info } = await image.toColorspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true })
  // Compositing adds an alpha channel; a second pass drops it, so the PNG is plain RGB.
  const drawn = await sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } })
    .composite([{ input: overlay(info.width, info.height, faces, labels) }])
    .raw()
    .toBuffer({ resolveWithObject: true })
  await sharp(drawn.data, { raw: { width: drawn.info.width, height: drawn.info.height, channels: drawn.info.channels } })
    .removeAlpha()
    .png()
    .toFile(out)
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  )
}

function format(face: DetectedFace): string {
  const n = (v: number) => v.toFixed(1)
  return `box ${face.box.map(n).join(',')}  score ${face.score.toFixed(4)}  landmarks ${face.landmarks.map(([x, y]) => `${n(x)},${n(y)}`).join(' ')}`
}

export async function detectCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(detectSpec, argv)
  if (parsed.help) return printHelp(detectSpec)
  const o = parsed.options as unknown as DetectFlags
  const photos = parsed.positionals.map((p) => resolve(p))
  const draw = o.draw ? resolve(o.draw) : undefined
  // Several photos need a folder; one photo may go to a folder too, if one is there.
  const drawDir = draw && (photos.length > 1 || (await isDirectory(draw))) ? draw : undefined
  // Named by the rule of derived-names.ts; refused before anything is written if DIR holds the photos.
  const drawnTo = drawDir ? drawnPaths(drawDir, photos) : undefined
  if (drawDir) await mkdir(drawDir, { recursive: true })
  else if (draw) await mkdir(dirname(draw), { recursive: true })
  const detector = await FaceDetector.load({ device: o.device as Device, ...(o.threads ? { threads: o.threads } : {}) })
  const results: ({ file: string; faces: DetectedFace[]; drawn?: string } | { file: string; error: { code: string; message: string } })[] = []
  let bad = 0
  try {
    for (const [i, photo] of photos.entries()) {
      let faces: DetectedFace[]
      try {
        ;[faces] = (await detector.detectFiles([photo], setIn(DETECT, o))) as [DetectedFace[]]
      } catch (error) {
        // One unreadable photo must not cost the results of the others.
        if (!(error instanceof DataError)) throw error
        bad++
        results.push({ file: photo, error: { code: error.code, message: error.message } })
        process.stderr.write(`bad image: ${error.message}\n`)
        continue
      }
      const result: { file: string; faces: DetectedFace[]; drawn?: string } = { file: photo, faces }
      if (draw) {
        result.drawn = drawnTo ? drawnTo[i]! : draw
        await drawFaces(photo, faces!, result.drawn).catch((error: unknown) => {
          throw new DataError(photo, `could not draw onto ${result.drawn}: ${(error as Error).message}`, { cause: error })
        })
      }
      results.push(result)
      if (!parsed.json) {
        console.log(`${photo}: ${faces!.length === 0 ? 'no face' : `${faces!.length} face${faces!.length > 1 ? 's' : ''}`}${result.drawn ? ` (drawn to ${result.drawn})` : ''}`)
        for (const face of faces!) console.log(`  ${format(face)}`)
      }
    }
  } finally {
    detector.dispose()
  }
  if (parsed.json) console.log(JSON.stringify(results))
  if (bad > 0) process.stderr.write(`${bad} of ${photos.length} photos could not be read${o.onBadImage === 'skip' ? ' (skipped)' : ''}\n`)
  return bad > 0 && o.onBadImage === 'error' ? EXIT.failure : EXIT.ok
}
