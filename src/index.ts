/**
 * facenet-torch: train, evaluate and run FaceNet face-embedding models from Node.js,
 * on libtorch.
 */
export { FaceNet } from './model'
export type { Arch, CreateOptions, EmbedOptions, ImageBatch, LayerSummary, LoadOptions, ModelInfo, ModelSummary, Normalization, Precision, SaveOptions } from './model'
export { devices } from './device'
export type { Device, DeviceReport } from './device'
export { mineTriplets, tripletLoss } from './mining'
export { latestCheckpoint, Trainer } from './trainer'
export { acquireRunLock } from './run-lock'
export type { RunLock } from './run-lock'
export { CENTER_CROP_KEY, decodeImages, embedFiles } from './inference'
export type { AlignedEmbeddings, EmbedAlignOptions, EmbedFilesOptions } from './inference'
export type { DecodeOptions } from './inference'
export type { EpochResult, FitOptions, FitResult, OptimizerName, Schedule, StepResult, TrainerOptions, Validation } from './trainer'
export type {
  DistanceName,
  MinedTriplets,
  MineOptions,
  MinerName,
  MiningStats,
  Triplets,
  TripletLossOptions,
  TripletLossResult,
} from './mining'
export {
  BusyError,
  DataError,
  DeviceUnavailableError,
  DisposedError,
  FaceNetError,
  InvalidArgumentError,
  LibtorchNotFoundError,
  NativeAddonError,
  NonFiniteError,
  OutputError,
  SetupError,
  ShapeError,
  TorchError,
  UnknownArchError,
  WeightsError,
} from './errors'
export type { FaceNetErrorCode, LibtorchSearchResult } from './errors'
export { TORCH_VERSION } from './libtorch'
export type { LibtorchSource } from './libtorch'
export * from './data'
export * from './eval'
export * from './report'
export { ALIGN_MAX_PIXELS, ALIGN_MODES, alignFaces } from './align'
export type { AlignedFaces, AlignMode, AlignOptions, FaceFinder, FaceGeometry, FaceSelection } from './align'
export { detectFaces, FaceDetector, MTCNN_WEIGHTS } from './detect'
export type { DetectedFace, DetectOptions, DetectorLoadOptions } from './detect'
