export { distanceHistogram, renderVegaLite } from './plots'
export type { LossPoint, PlotOptions } from './plots'
export { writeReport } from './report'
export type { ReportFiles, ReportInput, ReportOptions, ReportRow } from './report'
