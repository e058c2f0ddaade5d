/**
 * facenet-torch: train, evaluate and run FaceNet face-embedding models from Node.js,
 * on libtorch.
 *
 * The public API, listed name by name: helpers of the modules below stay theirs. The
 * README's API table lists the same names (`__test__/exports.spec.ts` holds them equal).
 */
export { EMBEDDING_SPACE_KEY, FaceNet, PRETRAINED_MODELS } from './model'
export type { CreateOptions, EmbedOptions, ImageBatch, LayerSummary, LoadOptions, ModelInfo, ModelSummary, PretrainedModel, SaveOptions, TinyOptions } from './model'
export { FaceGallery, findFaces } from './recognize'
export type { FindFacesOptions, GalleryOptions, Identification, IdentifyOptions, RecognizedFace } from './recognize'
export { THRESHOLD_KEY } from './threshold'
export {
  ALIGN_MODES,
  ARCHS,
  CLUSTERING_METHODS,
  DISTANCES,
  FACE_SELECTIONS,
  FALLBACKS,
  LOSSES,
  METRICS,
  MINERS,
  MINING_MODES,
  NEGATIVE_CHOICES,
  NORMALIZATIONS,
  ON_BAD_IMAGE,
  OPTIMIZERS,
  PRECISIONS,
  REDUCERS,
  SCHEDULES,
} from './options'
export type {
  AlignMode,
  Arch,
  ClusteringMethod,
  DistanceName,
  Fallback,
  FaceSelection,
  Metric,
  MinerName,
  MiningMode,
  NegativeChoice,
  Normalization,
  OnBadImage,
  OptimizerName,
  Precision,
  Reducer,
  ScheduleType,
} from './options'
export { devices } from './device'
export type { Device, DeviceReport } from './device'
export { mineTriplets, tripletLoss } from './mining'
export type { MinedTriplets, MineOptions, MiningStats, Triplets, TripletLossOptions, TripletLossResult } from './mining'
export { Trainer } from './training/trainer'
export type { EpochResult, FitOptions, FitResult, HarmonicOptions, LrGroup, Schedule, StepResult, TrainerOptions, Validation } from './training/trainer'
export type { LossOptions, LossPhaseOptions, LossType, MarginLossOptions, ResolvedLossPhase, SoftmaxCenterOptions, TripletObjective } from './training/objective'
export { latestCheckpoint } from './training/checkpoints'
export { distributedFromEnv } from './training/distributed'
export type { DistributedOptions } from './training/distributed'
export { acquireRunLock } from './run-lock'
export type { RunLock } from './run-lock'
export { ALIGNMENT_KEY, CENTER_CROP_KEY, embedFiles } from './inference'
export type { AlignedEmbeddings, EmbedAlignOptions, EmbedFilesOptions } from './inference'
export { decodeImages } from './data/decode'
export type { DecodeOptions } from './data/decode'
export {
  BusyError,
  DataError,
  DistributedError,
  DeviceUnavailableError,
  DisposedError,
  FaceNetError,
  IncompatibleModelsError,
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
export type { DistributedErrorCode, FaceNetErrorCode, LibtorchSearchResult } from './errors'
export { TORCH_VERSION } from './libtorch'
export type { LibtorchSource } from './libtorch'
export { ImageFolder } from './data/image-folder'
export type { ImageFolderItem, ImageFolderOptions } from './data/image-folder'
export type { FolderAlignOptions } from './data/align-cache'
export { NpyDataset } from './data/npy'
export type { NpyArray, NpyDatasetPaths } from './data/npy'
export { packImageFolder } from './data/pack'
export type { PackOptions, PackResult } from './data/pack'
export { LfwPairs } from './data/lfw-pairs'
export type { LfwFold, LfwPair, LfwPairsOptions } from './data/lfw-pairs'
export type { AugmentOptions, Fit, InputSize } from './data/preprocess'
export { PKSampler, SequentialSampler, ShuffleSampler } from './data/sampler'
export type { PKSamplerOptions, SampledBatch, SamplerState, Shard, ShuffleSamplerOptions, ShuffleSamplerState } from './data/sampler'
export { BatchLoader } from './data/loader'
export type { Batch, BatchSampler, LoaderOptions } from './data/loader'
export type { ImageInput, ImageSource, SkippedImage } from './data/source'
export { evaluate, loadPairImages } from './evaluate'
export type { EvaluateOptions, EvaluateResult, PairImages, PairImagesOptions } from './evaluate'
export { rawPixelEmbeddings } from './eval/embeddings'
export type { Embeddings } from './eval/embeddings'
export type { Roc } from './eval/roc'
export { evaluateVerification } from './eval/verification'
export type { IndexPair, MeanStd, PairDistances, Pairs, ThresholdGrid, VerificationOptions, VerificationResult } from './eval/verification'
export { evaluateIdentification, splitGalleryProbe } from './eval/identification'
export type { IdentificationOptions, IdentificationResult } from './eval/identification'
export { evaluateClustering } from './eval/clustering'
export type { ClusteringOptions, ClusteringResult, ClusterScores } from './eval/clustering'
export { writeReport } from './report/report'
export type { LossPoint, PlotOptions } from './report/plots'
export type { ReportFiles, ReportInput, ReportOptions, ReportRow } from './report/report'
export { ALIGN_MAX_PIXELS, alignFaces } from './align'
export type { AlignedFaces, AlignOptions, FaceFinder, FaceGeometry } from './align'
export { detectFaces, FaceDetector, MTCNN_WEIGHTS } from './detect'
export type { DetectedFace, DetectOptions, DetectorLoadOptions } from './detect'
