export { l2NormalizeRows, rawPixelEmbeddings, resolveEmbeddings } from './embeddings'
export type { Embeddings, Metric } from './embeddings'
export { equalErrorRate, rocCurve, trapezoid } from './roc'
export type { Roc } from './roc'
export { arange, evaluateVerification, interp1dSlinear, kFold } from './verification'
export type {
  IndexPair,
  MeanStd,
  PairDistances,
  Pairs,
  ThresholdGrid,
  VerificationOptions,
  VerificationResult,
} from './verification'
export { evaluateIdentification, splitGalleryProbe } from './identification'
export type { IdentificationOptions, IdentificationResult } from './identification'
export { averageLinkage, clusterScores, connectedComponents, evaluateClustering } from './clustering'
export type { ClusteringMethod, ClusteringOptions, ClusteringResult, ClusterScores } from './clustering'
export { evaluate } from './model'
export type { EvaluateOptions, EvaluateResult } from './model'
export { loadPairImages } from './lfw'
export type { PairImages, PairImagesOptions } from './lfw'
