//! The model zoo and the [`FaceNet`] wrapper that owns a network's weights.

mod init;
mod layers;
mod nn1;

use crate::error::{Error, Result};
use crate::preprocess::{to_network_input, Normalization};
use std::sync::Mutex;
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};

pub use layers::l2_normalize;

/// Height and width, in pixels, that a network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    pub height: i64,
    pub width: i64,
}

/// The architectures the zoo builds, by the names users pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The notebook's NN1: Zeiler&Fergus with batch norm, maxout, FC 4096, dropout 0.2.
    Nn1,
}

impl Arch {
    pub const ALL: [Arch; 1] = [Arch::Nn1];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Nn1 => "nn1",
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|arch| arch.name() == name)
            .ok_or_else(|| Error::UnknownArch {
                name: name.to_owned(),
                known: Self::ALL.map(Arch::name).join(", "),
            })
    }

    pub fn input_size(self) -> InputSize {
        match self {
            Arch::Nn1 => nn1::INPUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub embedding_dim: i64,
    pub seed: u64,
    pub device: Device,
    pub normalization: Normalization,
}

impl ModelConfig {
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            embedding_dim: 128,
            seed: 0,
            device: Device::Cpu,
            normalization: Normalization::Fixed,
        }
    }
}

/// Images are embedded in chunks of this many, which bounds peak activation memory
/// regardless of how large a batch the caller passes.
const EMBED_CHUNK: i64 = 32;

/// A FaceNet network with its weights.
pub struct FaceNet {
    config: ModelConfig,
    vs: nn::VarStore,
    net: Box<dyn ModuleT>,
}

impl std::fmt::Debug for FaceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceNet")
            .field("config", &self.config)
            .finish()
    }
}

/// libtorch's default generator is process-global; holding this while seeding and
/// initializing keeps two models built at once on different threads reproducible.
static INIT_LOCK: Mutex<()> = Mutex::new(());

impl FaceNet {
    pub fn new(config: ModelConfig) -> Result<Self> {
        if !(1..=4096).contains(&config.embedding_dim) {
            return Err(Error::invalid(format!(
                "embeddingDim must be between 1 and 4096, got {}",
                config.embedding_dim
            )));
        }
        let _guard = INIT_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Seeded so that the same seed gives bit-identical initial weights.
        tch::manual_seed(config.seed as i64);
        // Weights are drawn on the CPU and then moved: CPU and CUDA generators differ, and
        // the same seed should give the same model on either device.
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let net: Box<dyn ModuleT> = match config.arch {
            Arch::Nn1 => Box::new(nn1::Nn1::new(&root, config.embedding_dim)),
        };
        vs.set_device(config.device);
        Ok(Self { config, vs, net })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn input_size(&self) -> InputSize {
        self.config.arch.input_size()
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64
    }

    /// Network input (N×3×H×W float, normalized, on the model's device) → N×D embeddings
    /// of unit norm. Gradients flow; `train` selects batch-norm and dropout behaviour.
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(input, train)
    }

    /// Embeds a batch of N×H×W×3 images (uint8, or float32 pixel values in 0..255) held
    /// on the CPU. Returns N×D float embeddings of unit norm, on the CPU.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let expected = self.input_size();
        check_image_batch(images, expected)?;
        let _no_grad = tch::no_grad_guard();
        let n = images.size()[0];
        let mut chunks = Vec::with_capacity(((n + EMBED_CHUNK - 1) / EMBED_CHUNK) as usize);
        let mut start = 0;
        while start < n {
            let len = EMBED_CHUNK.min(n - start);
            let chunk = images.f_narrow(0, start, len)?;
            let input = to_network_input(&chunk, self.device(), self.config.normalization)?;
            let embeddings = self.net.forward_t(&input, false);
            chunks.push(embeddings.f_to_device(Device::Cpu)?);
            start += len;
        }
        if chunks.is_empty() {
            return Ok(Tensor::f_zeros(
                [0, self.config.embedding_dim],
                (Kind::Float, Device::Cpu),
            )?);
        }
        Ok(Tensor::f_cat(&chunks, 0)?)
    }
}

/// Checks that `images` is N×H×W×3 with the network's H and W and a pixel kind we accept.
pub fn check_image_batch(images: &Tensor, expected: InputSize) -> Result<()> {
    let size = images.size();
    if size.len() != 4 || size[3] != 3 {
        return Err(Error::shape(format!(
            "images must be N×H×W×3 (channels last, RGB), got shape {size:?}"
        )));
    }
    if size[1] != expected.height || size[2] != expected.width {
        return Err(Error::shape(format!(
            "images are {}×{} but the network takes {}×{} (height×width)",
            size[1], size[2], expected.height, expected.width
        )));
    }
    match images.kind() {
        Kind::Uint8 | Kind::Float => Ok(()),
        kind => Err(Error::shape(format!(
            "images must be uint8 or float32, got {kind:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random pixels that do not touch libtorch's global generator,
    /// which other tests running in parallel seed.
    fn random_images(n: i64, size: InputSize, seed: i64) -> Tensor {
        let len = (n * size.height * size.width * 3) as usize;
        let mut state = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
        let pixels: Vec<u8> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 56) as u8
            })
            .collect();
        Tensor::from_slice(&pixels).view([n, size.height, size.width, 3])
    }

    #[test]
    fn nn1_embeds_to_unit_vectors_of_the_requested_dim() {
        let model = FaceNet::new(ModelConfig {
            embedding_dim: 64,
            ..ModelConfig::new(Arch::Nn1)
        })
        .unwrap();
        let images = random_images(3, model.input_size(), 1);
        let embeddings = model.embed(&images).unwrap();
        assert_eq!(embeddings.size(), [3, 64]);
        let norms = Vec::<f32>::try_from(embeddings.norm_scalaropt_dim(2, [1], false)).unwrap();
        for norm in norms {
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }

    #[test]
    fn nn1_has_the_notebook_parameter_count() {
        let model = FaceNet::new(ModelConfig::new(Arch::Nn1)).unwrap();
        // convs (no bias) + batch norms + fc1 6272→4096 + fc2 4096→128
        let convs: i64 = [
            3 * 49 * 64,
            64 * 64,
            64 * 9 * 192,
            192 * 192,
            192 * 9 * 384,
            384 * 384,
            384 * 9 * 256,
            256 * 256,
            256 * 9 * 256,
            256 * 256,
            256 * 9 * 256,
        ]
        .iter()
        .sum();
        let bn = 2 * (64 + 64 + 192 + 192 + 384 + 384 + 256 * 5);
        let fc = 6272 * 4096 + 4096 + 4096 * 128 + 128;
        assert_eq!(model.parameter_count(), convs + bn + fc);
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let embed = |seed| {
            let model = FaceNet::new(ModelConfig {
                seed,
                ..ModelConfig::new(Arch::Nn1)
            })
            .unwrap();
            model.embed(&random_images(2, nn1::INPUT, 7)).unwrap()
        };
        let a = embed(5);
        assert!(a.equal(&embed(5)));
        assert!(!a.equal(&embed(6)));
    }

    #[test]
    fn wrong_image_size_is_a_shape_error_naming_both_sizes() {
        let model = FaceNet::new(ModelConfig::new(Arch::Nn1)).unwrap();
        let err = model
            .embed(&Tensor::zeros([1, 100, 120, 3], (Kind::Uint8, Device::Cpu)))
            .unwrap_err();
        assert_eq!(err.code(), "ERR_SHAPE");
        assert!(err.to_string().contains("100×120"), "{err}");
        assert!(err.to_string().contains("220×220"), "{err}");
    }

    #[test]
    fn unknown_arch_lists_the_known_ones() {
        let err = Arch::from_name("resnet9000").unwrap_err();
        assert_eq!(err.code(), "ERR_UNKNOWN_ARCH");
        assert!(err.to_string().contains("resnet9000"));
        assert!(err.to_string().contains("nn1"));
    }
}
