/** `facenet convert`: a PyTorch checkpoint (or any weights file the library reads) to safetensors. */
import { resolve } from 'node:path'
import { z } from 'zod'
import { ARCHS } from '../options'
import { FaceNet } from '../model'
import { outputProblem } from './model'
import { EXIT, parseCommand, printHelp, SUMMARIES, UsageError, type CommandSpec } from './options'

const convertSchema = z.strictObject({
  arch: z.enum(ARCHS).optional(),
})

export const convertSpec: CommandSpec<typeof convertSchema> = {
  name: 'convert',
  summary: SUMMARIES.convert,
  usage: 'facenet convert IN.pt OUT.safetensors [--arch ARCH] [--json]',
  positionals: { name: 'files', min: 2, max: 2 },
  flags: {
    arch: {
      kind: 'string',
      value: 'ARCH',
      help: `arch of the state_dict: ${ARCHS.join(', ')} (default: recognised from the tensor names; facenet-pytorch's InceptionResnetV1 is 'inception-resnet-v1')`,
    },
  },
  schema: convertSchema,
  notes: [
    'IN is a torch.save file (.pt/.pth, zip or legacy format) holding a state_dict, or a dict with one under',
    "'state_dict' or 'model'; a safetensors state_dict or a dlib .dat works too. It is read without Python and",
    'without running any of its pickle: only tensors and plain containers are built, as torch.load(weights_only=True).',
    'OUT gets facenet-torch metadata (arch, embeddingDim, input size, normalization), so it loads without --arch.',
  ],
}

export async function convertCommand(argv: string[]): Promise<number> {
  const parsed = await parseCommand(convertSpec, argv)
  if (parsed.help) return printHelp(convertSpec)
  const [input, output] = parsed.positionals.map((p) => resolve(p)) as [string, string]
  if (!output.endsWith('.safetensors')) throw new UsageError(`the output ${output} must end in .safetensors`)
  if (input === output) throw new UsageError('the input and the output are the same file')
  const problem = await outputProblem(output)
  if (problem) throw new UsageError(`cannot write the output: ${problem}`)
  // On the CPU with one thread: converting is copying, and must not wait for a GPU.
  using model = await FaceNet.load(input, { device: 'cpu', threads: 1, ...(parsed.options.arch ? { arch: parsed.options.arch } : {}) })
  await model.save(output)
  const info = model.info
  const result = { input, output, arch: info.arch, embeddingDim: info.embeddingDim, normalization: info.normalization, parameters: info.parameterCount }
  if (parsed.json) console.log(JSON.stringify(result))
  else console.log(`${output}: ${result.arch}, ${result.embeddingDim}-d embeddings, '${result.normalization}' normalization, ${result.parameters.toLocaleString('en-US')} parameters (from ${input})`)
  return EXIT.ok
}
