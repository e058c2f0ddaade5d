import { binding } from './binding'

/** Where a model runs: `'auto'` picks the first CUDA device when there is one. */
export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`

export interface DeviceReport {
  /** The CPU is always there. */
  cpu: true
  /** Threads libtorch uses for one operation by default. */
  cpuThreads: number
  /** Whether libtorch can use a CUDA GPU in this process. */
  cudaAvailable: boolean
  /** Number of visible CUDA devices (respects `CUDA_VISIBLE_DEVICES`). */
  cudaDeviceCount: number
  cudnnAvailable: boolean
  /** The libtorch version the addon is built for. */
  libtorchVersion: string
}

/** What this machine offers to libtorch. */
export function devices(): DeviceReport {
  const info = binding.devices()
  return {
    cpu: true,
    cpuThreads: info.cpuThreads,
    cudaAvailable: info.cudaAvailable,
    cudaDeviceCount: info.cudaDeviceCount,
    cudnnAvailable: info.cudnnAvailable,
    libtorchVersion: binding.libtorchVersion(),
  }
}
