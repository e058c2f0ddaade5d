//! The closed option sets as string enums: napi refuses any other value on the way in, and
//! the generated `index.d.ts` types each as a union of its literals. These enums are the one
//! source of those lists: `scripts/binding-enums.mjs` (run by `scripts/build.mjs` after
//! `napi build`) turns the unions into `src/binding-enums.ts`, which `src/options.ts`
//! re-exports under the public names (`ARCHS`, `MINERS`, …). To add a value, add it here and
//! rebuild. Where the core has a matching enum, `From` converts without a `match` on text.

use facenet::augment::Fit;
use facenet::distance::Distance;
use facenet::loss::Reducer;
use facenet::mining::{Choice, Fallback};
use facenet::{Arch, Normalization, Precision};
use napi_derive::napi;

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingArch {
    #[napi(value = "tiny")]
    Tiny,
    #[napi(value = "nn1")]
    Nn1,
    #[napi(value = "nn1-paper")]
    Nn1Paper,
    #[napi(value = "nn2")]
    Nn2,
    #[napi(value = "nn3")]
    Nn3,
    #[napi(value = "nn4")]
    Nn4,
    #[napi(value = "nns1")]
    Nns1,
    #[napi(value = "nns2")]
    Nns2,
    #[napi(value = "inception-resnet-v1")]
    InceptionResnetV1,
    #[napi(value = "iresnet18")]
    Iresnet18,
    #[napi(value = "iresnet34")]
    Iresnet34,
    #[napi(value = "iresnet50")]
    Iresnet50,
    #[napi(value = "dlib-resnet-v1")]
    DlibResnetV1,
}

impl From<BindingArch> for Arch {
    fn from(arch: BindingArch) -> Self {
        match arch {
            BindingArch::Tiny => Arch::Tiny,
            BindingArch::Nn1 => Arch::Nn1,
            BindingArch::Nn1Paper => Arch::Nn1Paper,
            BindingArch::Nn2 => Arch::Nn2,
            BindingArch::Nn3 => Arch::Nn3,
            BindingArch::Nn4 => Arch::Nn4,
            BindingArch::Nns1 => Arch::Nns1,
            BindingArch::Nns2 => Arch::Nns2,
            BindingArch::InceptionResnetV1 => Arch::InceptionResnetV1,
            BindingArch::Iresnet18 => Arch::Iresnet18,
            BindingArch::Iresnet34 => Arch::Iresnet34,
            BindingArch::Iresnet50 => Arch::Iresnet50,
            BindingArch::DlibResnetV1 => Arch::DlibResnetV1,
        }
    }
}

impl From<Arch> for BindingArch {
    fn from(arch: Arch) -> Self {
        match arch {
            Arch::Tiny => BindingArch::Tiny,
            Arch::Nn1 => BindingArch::Nn1,
            Arch::Nn1Paper => BindingArch::Nn1Paper,
            Arch::Nn2 => BindingArch::Nn2,
            Arch::Nn3 => BindingArch::Nn3,
            Arch::Nn4 => BindingArch::Nn4,
            Arch::Nns1 => BindingArch::Nns1,
            Arch::Nns2 => BindingArch::Nns2,
            Arch::InceptionResnetV1 => BindingArch::InceptionResnetV1,
            Arch::Iresnet18 => BindingArch::Iresnet18,
            Arch::Iresnet34 => BindingArch::Iresnet34,
            Arch::Iresnet50 => BindingArch::Iresnet50,
            Arch::DlibResnetV1 => BindingArch::DlibResnetV1,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingNormalization {
    #[napi(value = "fixed")]
    Fixed,
    #[napi(value = "prewhiten")]
    Prewhiten,
    #[napi(value = "dlib")]
    Dlib,
}

impl From<BindingNormalization> for Normalization {
    fn from(normalization: BindingNormalization) -> Self {
        match normalization {
            BindingNormalization::Fixed => Normalization::Fixed,
            BindingNormalization::Prewhiten => Normalization::Prewhiten,
            BindingNormalization::Dlib => Normalization::Dlib,
        }
    }
}

impl From<Normalization> for BindingNormalization {
    fn from(normalization: Normalization) -> Self {
        match normalization {
            Normalization::Fixed => BindingNormalization::Fixed,
            Normalization::Prewhiten => BindingNormalization::Prewhiten,
            Normalization::Dlib => BindingNormalization::Dlib,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPrecision {
    #[napi(value = "fp32")]
    Fp32,
    #[napi(value = "bf16")]
    Bf16,
}

/// How a gathered batch is fitted to the network's input, as sharp's `fit`.
#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingFit {
    #[napi(value = "cover")]
    Cover,
    #[napi(value = "fill")]
    Fill,
}

impl From<BindingFit> for Fit {
    fn from(fit: BindingFit) -> Self {
        match fit {
            BindingFit::Cover => Fit::Cover,
            BindingFit::Fill => Fit::Fill,
        }
    }
}

impl From<BindingPrecision> for Precision {
    fn from(precision: BindingPrecision) -> Self {
        match precision {
            BindingPrecision::Fp32 => Precision::Fp32,
            BindingPrecision::Bf16 => Precision::Bf16,
        }
    }
}

/// The online miners. The notebook's per-epoch list is a mining *mode* (a `chunk` given
/// to `mineTriplets`), not a miner.
#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingMiner {
    #[napi(value = "semi-hard")]
    SemiHard,
    #[napi(value = "batch-hard")]
    BatchHard,
    #[napi(value = "batch-all")]
    BatchAll,
    #[napi(value = "hard")]
    Hard,
    #[napi(value = "random")]
    Random,
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingNegativeChoice {
    #[napi(value = "random")]
    Random,
    #[napi(value = "hardest")]
    Hardest,
}

impl From<BindingNegativeChoice> for Choice {
    fn from(choice: BindingNegativeChoice) -> Self {
        match choice {
            BindingNegativeChoice::Random => Choice::Random,
            BindingNegativeChoice::Hardest => Choice::Hardest,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingFallback {
    #[napi(value = "nearest-farther-else-farthest")]
    NearestFartherElseFarthest,
    #[napi(value = "hardest")]
    Hardest,
    #[napi(value = "skip")]
    Skip,
}

impl From<BindingFallback> for Fallback {
    fn from(fallback: BindingFallback) -> Self {
        match fallback {
            BindingFallback::NearestFartherElseFarthest => Fallback::NearestFartherElseFarthest,
            BindingFallback::Hardest => Fallback::Hardest,
            BindingFallback::Skip => Fallback::Skip,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingDistance {
    #[napi(value = "squared-l2")]
    SquaredL2,
    #[napi(value = "cosine")]
    Cosine,
}

impl From<BindingDistance> for Distance {
    fn from(distance: BindingDistance) -> Self {
        match distance {
            BindingDistance::SquaredL2 => Distance::SquaredL2,
            BindingDistance::Cosine => Distance::Cosine,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingReducer {
    #[napi(value = "mean")]
    Mean,
    #[napi(value = "mean-active")]
    MeanActive,
}

impl From<BindingReducer> for Reducer {
    fn from(reducer: BindingReducer) -> Self {
        match reducer {
            BindingReducer::Mean => Reducer::Mean,
            BindingReducer::MeanActive => Reducer::MeanActive,
        }
    }
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingOptimizer {
    #[napi(value = "sgd")]
    Sgd,
    #[napi(value = "adagrad")]
    Adagrad,
    #[napi(value = "adam")]
    Adam,
    #[napi(value = "adamw")]
    Adamw,
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingSchedule {
    #[napi(value = "constant")]
    Constant,
    #[napi(value = "step")]
    Step,
    #[napi(value = "cosine")]
    Cosine,
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingAlignMode {
    #[napi(value = "template")]
    Template,
    #[napi(value = "margin")]
    Margin,
    #[napi(value = "dlib")]
    Dlib,
}

#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingLossKind {
    #[napi(value = "triplet")]
    Triplet,
    #[napi(value = "arcface")]
    Arcface,
    #[napi(value = "cosface")]
    Cosface,
    #[napi(value = "softmax-center")]
    SoftmaxCenter,
}
