// The seeded generator is shared beyond data/ (eval/ draws gallery splits with it); it
// lives in src/rng.ts. data/'s modules keep importing it from here.
export { Rng, type RngState } from '../rng'
