/**
 * Data-parallel training's settings: where a rank joins its group (torchrun's variables).
 * Each rank's share of a batch is cut by the samplers (`shard`, src/data/sampler.ts).
 */
import { checkKeys, InvalidArgumentError } from '../errors'

/**
 * One process's place in a data-parallel run over PyTorch's c10d (Gloo, CPU tensors).
 * Every rank runs the same training code on its share of each batch; rank 0 hosts the
 * rendezvous at `masterAddr:masterPort` and is the only one that writes checkpoints, logs
 * and TensorBoard events. {@link distributedFromEnv} reads it from torchrun's variables.
 */
export interface DistributedOptions {
  /** This process, in `0..worldSize`. */
  rank: number
  /** Processes in the run. */
  worldSize: number
  /** The host of rank 0 (MASTER_ADDR), e.g. `127.0.0.1` for ranks on one machine. */
  masterAddr: string
  /** The port rank 0 listens on for the rendezvous (MASTER_PORT). */
  masterPort: number
  /**
   * How long joining, and each collective, may wait for the other ranks before failing
   * with `ERR_DIST_TIMEOUT`. Default `300`. A rank whose process is gone is noticed at
   * once (`ERR_DIST_PEER_LOST`); this bounds a rank that hangs.
   */
  timeoutSeconds?: number
  /**
   * The network interface Gloo binds to (torch's GLOO_SOCKET_IFNAME), for machines with
   * several. Default: the loopback for a loopback `masterAddr`, else the address this
   * machine's hostname resolves to.
   */
  interface?: string
}

export const DISTRIBUTED_KEYS: readonly (keyof DistributedOptions)[] = ['rank', 'worldSize', 'masterAddr', 'masterPort', 'timeoutSeconds', 'interface']

export const DEFAULT_TIMEOUT_SECONDS = 300

/** {@link DistributedOptions} with its defaults filled in and every value checked. */
export type ResolvedDistributed = Required<Omit<DistributedOptions, 'interface'>> & Pick<DistributedOptions, 'interface'>

export function resolveDistributed(options: DistributedOptions): ResolvedDistributed {
  checkKeys('distributed', options, DISTRIBUTED_KEYS)
  const { rank, worldSize, masterAddr, masterPort } = options
  const timeoutSeconds = options.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new InvalidArgumentError(`distributed.worldSize must be an integer ≥ 1, got ${String(worldSize)}`)
  if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new InvalidArgumentError(`distributed.rank must be an integer in 0..${worldSize - 1}, got ${String(rank)}`)
  if (typeof masterAddr !== 'string' || masterAddr === '' || masterAddr.includes('\0')) throw new InvalidArgumentError(`distributed.masterAddr must be a host name or address, got ${JSON.stringify(masterAddr)}`)
  if (!Number.isInteger(masterPort) || masterPort < 1 || masterPort > 65535) throw new InvalidArgumentError(`distributed.masterPort must be a port in 1..65535, got ${String(masterPort)}`)
  if (typeof timeoutSeconds !== 'number' || !(timeoutSeconds > 0) || !Number.isFinite(timeoutSeconds)) throw new InvalidArgumentError(`distributed.timeoutSeconds must be a positive number, got ${String(timeoutSeconds)}`)
  if (options.interface !== undefined && (typeof options.interface !== 'string' || options.interface === '')) throw new InvalidArgumentError(`distributed.interface must be an interface name such as eth0, got ${JSON.stringify(options.interface)}`)
  return { rank, worldSize, masterAddr, masterPort, timeoutSeconds, ...(options.interface !== undefined ? { interface: options.interface } : {}) }
}

function integerVariable(env: NodeJS.ProcessEnv, name: string): number {
  const text = env[name]
  if (text === undefined || !/^\d+$/.test(text.trim())) throw new InvalidArgumentError(`${name} must be a non-negative integer, got ${text === undefined ? 'nothing' : JSON.stringify(text)} (torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)`)
  return Number(text.trim())
}

/**
 * The {@link DistributedOptions} that torchrun (or a Slurm or Kubernetes script) sets in
 * the environment: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, and optionally
 * `GLOO_SOCKET_IFNAME` and `FACENET_DIST_TIMEOUT` (seconds). `undefined` when
 * `WORLD_SIZE` is not set: a plain single-process run. `LOCAL_RANK` is not needed on the
 * CPU (it picks a GPU under NCCL).
 *
 * ```ts
 * const trainer = new Trainer(model, { distributed: distributedFromEnv() })
 * ```
 */
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env): DistributedOptions | undefined {
  if (env.WORLD_SIZE === undefined) return undefined
  const worldSize = integerVariable(env, 'WORLD_SIZE')
  const rank = integerVariable(env, 'RANK')
  const masterAddr = env.MASTER_ADDR ?? ''
  if (masterAddr === '') throw new InvalidArgumentError('MASTER_ADDR must name rank 0\'s host (WORLD_SIZE is set, so this is a distributed run)')
  const masterPort = integerVariable(env, 'MASTER_PORT')
  const timeout = env.FACENET_DIST_TIMEOUT
  const timeoutSeconds = timeout === undefined ? undefined : Number(timeout)
  if (timeout !== undefined && !(Number(timeout) > 0)) throw new InvalidArgumentError(`FACENET_DIST_TIMEOUT must be a positive number of seconds, got ${JSON.stringify(timeout)}`)
  return {
    rank,
    worldSize,
    masterAddr,
    masterPort,
    ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
    ...(env.GLOO_SOCKET_IFNAME ? { interface: env.GLOO_SOCKET_IFNAME } : {}),
  }
}
