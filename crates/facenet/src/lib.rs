//! facenet: FaceNet (Schroff et al., CVPR 2015) face-embedding networks on libtorch.
//!
//! The crate has no Node.js code in it; `facenet-node` binds it to JavaScript.

pub mod align;
pub mod augment;
pub mod checkpoint;
pub mod detect;
pub mod device;
pub mod distance;
pub mod distributed;
pub mod dlib;
pub mod error;
pub mod foreach;
pub mod freeze;
pub mod loss;
pub mod mining;
pub mod model;
pub mod optim;
pub mod packed;
pub mod precision;
pub mod preprocess;
pub(crate) mod rng;
pub mod torch_file;
pub mod train;
pub mod weights;

pub use device::{device_name, devices, parse_device, DeviceInfo};
pub use error::{Error, Result};
pub use model::{Arch, FaceNet, InputSize, ModelConfig};
pub use precision::Precision;
pub use preprocess::Normalization;

/// The libtorch version this crate is built for (checked by torch-sys at build time).
pub const LIBTORCH_VERSION: &str = "2.11.0";
