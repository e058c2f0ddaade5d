import { binding } from './binding'
import { loadedLibtorch, type LibtorchSource } from './libtorch'

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
  /** The torch install this process loaded libtorch from (see `FACENET_TORCH_HOME`). */
  libtorchPath: string
  /** Which step of the load-time search found it. */
  libtorchSource: LibtorchSource
  /** Whether libtorch_cuda was loaded; without it CUDA is unavailable even with a GPU. */
  cudaLibrariesLoaded: boolean
  /** Why libtorch_cuda was not loaded, where the install has it. */
  cudaLoadError?: string
}

/** What this machine offers to libtorch. */
export function devices(): DeviceReport {
  const info = binding.devices()
  // Set whenever `binding` is: importing it loads libtorch first.
  const libtorch = loadedLibtorch()!
  return {
    cpu: true,
    cpuThreads: info.cpuThreads,
    cudaAvailable: info.cudaAvailable,
    cudaDeviceCount: info.cudaDeviceCount,
    cudnnAvailable: info.cudnnAvailable,
    libtorchVersion: binding.libtorchVersion(),
    libtorchPath: libtorch.torchDir,
    libtorchSource: libtorch.source,
    cudaLibrariesLoaded: libtorch.cudaLoaded,
    ...(libtorch.cudaError === undefined ? {} : { cudaLoadError: libtorch.cudaError }),
  }
}
