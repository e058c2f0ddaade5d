/** Seeded random unit vectors for the mining benchmarks (no Math.random: runs repeat). */

/** Uniform [0, 1) numbers (mulberry32). */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** `n` rows of `d` Gaussian values (Box–Muller), each scaled to unit length. */
export function unitRows(n: number, d: number, rand: () => number): Float32Array {
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand())
  const rows = new Float32Array(n * d)
  for (let i = 0; i < n; i++) {
    let norm = 0
    for (let j = 0; j < d; j++) norm += (rows[i * d + j] = gauss()) ** 2
    for (let j = 0; j < d; j++) rows[i * d + j]! /= Math.sqrt(norm)
  }
  return rows
}
