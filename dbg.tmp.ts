import { FaceNet } from './src'
async function main() {
  const model = await FaceNet.create({ arch: 'tiny', device: 'cpu', threads: 1 })
  const image = new Uint8Array(64 * 64 * 3).map((_, i) => i % 251)
  const gc = (globalThis as { gc?: () => void }).gc
  for (let i = 0; i <= 8000; i += 4) {
    await Promise.all([model.embed(image), model.embed(image), model.embed(image), model.embed(image)])
    if (i % 1000 === 0) {
      const before = process.memoryUsage()
      gc?.()
      const after = process.memoryUsage()
      console.log(i, (before.rss / 2 ** 20).toFixed(1), 'after gc', (after.rss / 2 ** 20).toFixed(1), 'heap', (after.heapUsed / 2 ** 20).toFixed(1), 'external', (after.external / 2 ** 20).toFixed(1), 'ab', (after.arrayBuffers / 2 ** 20).toFixed(1))
    }
  }
  model.dispose()
}
void main()
