//! The model zoo and the [`FaceNet`] wrapper that owns a network's weights.

mod dlib_resnet;
mod inception;
mod inception_resnet_v1;
mod init;
mod iresnet;
mod layers;
mod nn1;
mod nn1_paper;
mod tiny;

use crate::error::{Error, Result};
use crate::precision::{with_precision, Precision};
use crate::preprocess::{to_network_input, Normalization};
use std::sync::Mutex;
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};

pub use dlib_resnet::{padded_add, DlibLayout, DlibUnit, DLIB_MEANS};
pub use layers::{l2_normalize, LayerRow};
pub use tiny::TinyConfig;

/// Height and width, in pixels, that a network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSize {
    pub height: i64,
    pub width: i64,
}

const fn size(height: i64, width: i64) -> InputSize {
    InputSize { height, width }
}

/// The architectures the zoo builds, by the names users pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// A small plain CNN (64×64) for tests and demos.
    Tiny,
    /// The notebook's NN1: Zeiler&Fergus with batch norm, maxout, FC 4096, dropout 0.2.
    Nn1,
    /// The paper's NN1 (Table 1): maxout fc1/fc2, fc7128, LRN; 220×220.
    Nn1Paper,
    /// The paper's Inception NN2 (Table 2), 224×224.
    Nn2,
    /// NN2 at 160×160.
    Nn3,
    /// NN2 at 96×96 without 5×5 convs in the top modules.
    Nn4,
    /// Mini Inception, 165×165.
    Nns1,
    /// Tiny Inception, 140×116.
    Nns2,
    /// Inception-ResNet-v1 with facenet-pytorch's tensor names, 160×160.
    InceptionResnetV1,
    /// insightface's IR-18 (iresnet18), 112×112.
    Iresnet18,
    /// insightface's IR-34 (iresnet34), 112×112.
    Iresnet34,
    /// insightface's IR-50 (iresnet50), 112×112.
    Iresnet50,
    /// dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`), 150×150;
    /// raw, not normalized, descriptors.
    DlibResnetV1,
}

impl Arch {
    pub const ALL: [Arch; 13] = [
        Arch::Tiny,
        Arch::Nn1,
        Arch::Nn1Paper,
        Arch::Nn2,
        Arch::Nn3,
        Arch::Nn4,
        Arch::Nns1,
        Arch::Nns2,
        Arch::InceptionResnetV1,
        Arch::Iresnet18,
        Arch::Iresnet34,
        Arch::Iresnet50,
        Arch::DlibResnetV1,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Tiny => "tiny",
            Arch::Nn1 => "nn1",
            Arch::Nn1Paper => "nn1-paper",
            Arch::Nn2 => "nn2",
            Arch::Nn3 => "nn3",
            Arch::Nn4 => "nn4",
            Arch::Nns1 => "nns1",
            Arch::Nns2 => "nns2",
            Arch::InceptionResnetV1 => "inception-resnet-v1",
            Arch::Iresnet18 => "iresnet18",
            Arch::Iresnet34 => "iresnet34",
            Arch::Iresnet50 => "iresnet50",
            Arch::DlibResnetV1 => "dlib-resnet-v1",
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
            Arch::Tiny => TinyConfig::default().input,
            Arch::Nn1 => nn1::INPUT,
            Arch::Nn1Paper => nn1_paper::INPUT,
            Arch::Nn2 => size(224, 224),
            Arch::Nn3 => size(160, 160),
            Arch::Nn4 => size(96, 96),
            Arch::Nns1 => size(165, 165),
            Arch::Nns2 => size(140, 116),
            Arch::InceptionResnetV1 => inception_resnet_v1::INPUT,
            Arch::Iresnet18 | Arch::Iresnet34 | Arch::Iresnet50 => iresnet::INPUT,
            Arch::DlibResnetV1 => DlibLayout::default().input,
        }
    }

    /// Whether the network's embeddings are L2-normalized (all but dlib's, whose raw
    /// descriptors are what dlib's threshold and stored galleries assume).
    pub fn normalizes(self) -> bool {
        self != Arch::DlibResnetV1
    }

    /// The input scaling the arch is built for when none is asked for.
    pub fn default_normalization(self) -> Normalization {
        match self {
            Arch::DlibResnetV1 => Normalization::Dlib,
            _ => Normalization::Fixed,
        }
    }

    /// Builds the network's variables under `root` and its layer table.
    fn build(self, root: &nn::Path, config: &ModelConfig) -> (Box<dyn ModuleT>, Vec<LayerRow>) {
        let (embedding_dim, tiny) = (config.embedding_dim, &config.tiny);
        let mut table = Vec::new();
        let t = &mut table;
        let input = config.input_size();
        let net: Box<dyn ModuleT> = match self {
            Arch::Tiny => Box::new(tiny::Tiny::new(root, t, tiny, embedding_dim)),
            Arch::Nn1 => Box::new(nn1::Nn1::new(root, t, embedding_dim)),
            Arch::Nn1Paper => Box::new(nn1_paper::Nn1Paper::new(root, t, embedding_dim)),
            Arch::Nn2 | Arch::Nn3 => {
                let spec = inception::nn2_spec(input);
                Box::new(inception::InceptionNet::new(root, t, &spec, embedding_dim))
            }
            Arch::Nn4 => {
                let spec = inception::nn4_spec(input);
                Box::new(inception::InceptionNet::new(root, t, &spec, embedding_dim))
            }
            Arch::Nns1 => {
                let spec = inception::nns1_spec(input);
                Box::new(inception::InceptionNet::new(root, t, &spec, embedding_dim))
            }
            Arch::Nns2 => {
                let spec = inception::nns2_spec(input);
                Box::new(inception::InceptionNet::new(root, t, &spec, embedding_dim))
            }
            Arch::InceptionResnetV1 => Box::new(inception_resnet_v1::InceptionResnetV1::new(
                root,
                t,
                embedding_dim,
            )),
            Arch::Iresnet18 => {
                Box::new(iresnet::IResNet::new(root, t, [2, 2, 2, 2], embedding_dim))
            }
            Arch::Iresnet34 => {
                Box::new(iresnet::IResNet::new(root, t, [3, 4, 6, 3], embedding_dim))
            }
            Arch::Iresnet50 => {
                Box::new(iresnet::IResNet::new(root, t, [3, 4, 14, 3], embedding_dim))
            }
            Arch::DlibResnetV1 => Box::new(dlib_resnet::DlibResNet::new(
                root,
                t,
                &config.dlib,
                embedding_dim,
            )),
        };
        (net, table)
    }
}

/// What `summary()` reports: sizes counted analytically from layer shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub arch: Arch,
    pub input: InputSize,
    pub embedding_dim: i64,
    /// Trainable parameters, counted from the weights themselves.
    pub parameters: i64,
    /// Multiply-adds per image of every conv and fully connected layer (the paper's
    /// "FLOPS").
    pub multiply_adds: i64,
    pub layers: Vec<LayerRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub embedding_dim: i64,
    pub seed: u64,
    pub device: Device,
    pub normalization: Normalization,
    /// Widths and input size of `tiny`; the other archs ignore it.
    pub tiny: TinyConfig,
    /// Units and input size of `dlib-resnet-v1`; the other archs ignore it.
    pub dlib: DlibLayout,
}

impl ModelConfig {
    pub fn new(arch: Arch) -> Self {
        Self {
            arch,
            embedding_dim: 128,
            seed: 0,
            device: Device::Cpu,
            normalization: arch.default_normalization(),
            tiny: TinyConfig::default(),
            dlib: DlibLayout::default(),
        }
    }

    /// The input the configured network takes (`tiny` and dlib layouts carry their own).
    pub fn input_size(&self) -> InputSize {
        match self.arch {
            Arch::Tiny => self.tiny.input,
            Arch::DlibResnetV1 => self.dlib.input,
            arch => arch.input_size(),
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
    layers: Vec<LayerRow>,
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
        match config.arch {
            Arch::Tiny => config.tiny.check()?,
            Arch::DlibResnetV1 => config.dlib.check()?,
            _ => {}
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
        let (net, layers) = config.arch.build(&root, &config);
        vs.set_device(config.device);
        Ok(Self {
            config,
            vs,
            net,
            layers,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn input_size(&self) -> InputSize {
        self.config.input_size()
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

    /// Parameter count, multiply-adds per image and the layer table.
    pub fn summary(&self) -> Summary {
        Summary {
            arch: self.config.arch,
            input: self.input_size(),
            embedding_dim: self.config.embedding_dim,
            parameters: self.parameter_count(),
            multiply_adds: self.layers.iter().map(|row| row.macs).sum(),
            layers: self.layers.clone(),
        }
    }

    /// Network input (N×3×H×W float, normalized, on the model's device) → N×D embeddings
    /// of unit norm. Gradients flow; `train` selects batch-norm and dropout behaviour.
    pub fn forward_t(&self, input: &Tensor, train: bool) -> Tensor {
        self.net.forward_t(input, train)
    }

    /// The network's output under `precision` as float32 rows. Under bf16 autocast the last
    /// linear layer, and so the L2 normalisation after it, rounds to bf16 (8 bits of
    /// mantissa): norms come out up to ~2e-3 from 1, depending on the CPU's bf16 kernels.
    /// The embedding is a float32 unit vector, so normalising archs divide by the norm
    /// again here, in float32, outside autocast. fp32 output is returned as it is.
    pub fn float32_embeddings(&self, embeddings: Tensor, precision: Precision) -> Result<Tensor> {
        let embeddings = embeddings.f_to_kind(Kind::Float)?;
        if precision == Precision::Fp32 || !self.config.arch.normalizes() {
            return Ok(embeddings);
        }
        let norm = embeddings
            .f_norm_scalaropt_dim(2, [1], true)?
            .f_clamp_min(1e-12)?;
        Ok(embeddings.f_div(&norm)?)
    }

    /// Embeds a batch of N×H×W×3 images (uint8, or float32 pixel values in 0..255) held
    /// on the CPU. Returns N×D float embeddings of unit norm, on the CPU.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        self.embed_with(images, Precision::Fp32)
    }

    /// [`FaceNet::embed`] with the forward pass in `precision`; the result is float32.
    pub fn embed_with(&self, images: &Tensor, precision: Precision) -> Result<Tensor> {
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
            let embeddings = with_precision(self.device(), precision, || {
                self.net.forward_t(&input, false)
            })?;
            let embeddings = self.float32_embeddings(embeddings, precision)?;
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
    fn bf16_embeddings_are_float32_unit_vectors() {
        let model = FaceNet::new(ModelConfig::new(Arch::Tiny)).unwrap();
        let images = random_images(4, model.input_size(), 3);
        let embeddings = model.embed_with(&images, Precision::Bf16).unwrap();
        assert_eq!(embeddings.kind(), Kind::Float);
        let norms = Vec::<f32>::try_from(embeddings.norm_scalaropt_dim(2, [1], false)).unwrap();
        for norm in norms {
            // bf16 rounding alone leaves norms ~1e-3 from 1; float32 division, ~1e-7.
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

    fn within(actual: i64, paper: f64, what: &str) {
        let ratio = actual as f64 / paper;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "{what}: {actual} is {ratio:.3}× the paper's {paper}"
        );
    }

    #[test]
    fn summaries_match_the_papers_figures_within_15_percent() {
        // (arch, params, multiply-adds) from the paper's Tables 1 and 2 and section 4.
        let paper: [(Arch, Option<f64>, f64); 5] = [
            (Arch::Nn1Paper, Some(140e6), 1.6e9),
            (Arch::Nn2, Some(7.5e6), 1.6e9),
            (Arch::Nn4, None, 285e6),
            (Arch::Nns1, Some(26e6), 220e6),
            (Arch::Nns2, Some(4.3e6), 20e6),
        ];
        for (arch, params, macs) in paper {
            let summary = FaceNet::new(ModelConfig::new(arch)).unwrap().summary();
            if let Some(params) = params {
                within(
                    summary.parameters,
                    params,
                    &format!("{} params", arch.name()),
                );
            }
            within(
                summary.multiply_adds,
                macs,
                &format!("{} FLOPs", arch.name()),
            );
        }
    }

    #[test]
    fn layer_tables_account_for_every_parameter() {
        for arch in Arch::ALL {
            let model = FaceNet::new(ModelConfig::new(arch)).unwrap();
            let summary = model.summary();
            let from_table: i64 = summary.layers.iter().map(|row| row.params).sum();
            assert_eq!(from_table, summary.parameters, "{}", arch.name());
            assert_eq!(summary.input, arch.input_size());
            assert_eq!(
                summary.layers.last().unwrap().output,
                [128],
                "{}",
                arch.name()
            );
        }
    }

    #[test]
    fn nn2_table_rows_match_table_2() {
        let summary = FaceNet::new(ModelConfig::new(Arch::Nn2)).unwrap().summary();
        let row = |name: &str| {
            summary
                .layers
                .iter()
                .find(|row| row.name == name)
                .unwrap_or_else(|| panic!("no row {name}"))
                .clone()
        };
        // Output sizes of Table 2.
        assert_eq!(row("conv1").output, [64, 112, 112]);
        assert_eq!(row("inception_3a.concat").output, [256, 28, 28]);
        assert_eq!(row("inception_3b.concat").output, [320, 28, 28]);
        assert_eq!(row("inception_3c.concat").output, [640, 14, 14]);
        assert_eq!(row("inception_4d.concat").output, [640, 14, 14]);
        assert_eq!(row("inception_4e.concat").output, [1024, 7, 7]);
        assert_eq!(row("inception_5b.concat").output, [1024, 7, 7]);
        assert_eq!(row("inception_3b.pool").kind, "l2pool 3×3");
        assert_eq!(row("inception_5b.pool").kind, "maxpool 3×3");
        // conv1: 7·7·3·64 weights (9K), 119M multiply-adds in the table.
        assert_eq!(row("conv1").macs, 7 * 7 * 3 * 64 * 112 * 112);
    }

    #[test]
    fn iresnet_parameter_counts_match_the_pytorch_twin() {
        // bench/inference.py's IResNet at 512-d, counting trainable tensors (insightface's
        // published IR-50 has 43.59M with the fixed `features.weight`).
        for (arch, twin) in [
            (Arch::Iresnet18, 24_025_088),
            (Arch::Iresnet34, 34_138_816),
            (Arch::Iresnet50, 43_590_336),
        ] {
            let model = FaceNet::new(ModelConfig {
                embedding_dim: 512,
                ..ModelConfig::new(arch)
            })
            .unwrap();
            assert_eq!(model.parameter_count(), twin, "{}", arch.name());
            let table: i64 = model.summary().layers.iter().map(|l| l.params).sum();
            assert_eq!(table, twin, "{}: the layer table", arch.name());
        }
    }

    #[test]
    fn every_arch_embeds_unit_vectors_in_both_modes() {
        for arch in Arch::ALL {
            // The big nets once, at 64-d; the small ones at every size the issue names.
            let dims: &[i64] = match arch {
                Arch::Tiny | Arch::Nns2 => &[64, 128, 256, 512],
                _ => &[64],
            };
            for &embedding_dim in dims {
                let model = FaceNet::new(ModelConfig {
                    embedding_dim,
                    ..ModelConfig::new(arch)
                })
                .unwrap();
                let input = to_network_input(
                    &random_images(2, arch.input_size(), 3),
                    Device::Cpu,
                    arch.default_normalization(),
                )
                .unwrap();
                for train in [false, true] {
                    let out = tch::no_grad(|| model.forward_t(&input, train));
                    assert_eq!(out.size(), [2, embedding_dim], "{}", arch.name());
                    let norms =
                        Vec::<f32>::try_from(out.norm_scalaropt_dim(2, [1], false)).unwrap();
                    for norm in norms {
                        if arch.normalizes() {
                            assert!((norm - 1.0).abs() < 1e-4, "{} norm {norm}", arch.name());
                        } else {
                            assert!(
                                norm.is_finite() && norm > 0.0,
                                "{} norm {norm}",
                                arch.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn inception_resnet_v1_has_facenet_pytorch_names_and_shapes() {
        let model = FaceNet::new(ModelConfig {
            embedding_dim: 512,
            ..ModelConfig::new(Arch::InceptionResnetV1)
        })
        .unwrap();
        let vars = model.var_store().variables();
        let shape = |name: &str| {
            vars.get(name)
                .unwrap_or_else(|| panic!("no tensor {name}"))
                .size()
        };
        assert_eq!(shape("conv2d_1a.conv.weight"), [32, 3, 3, 3]);
        assert_eq!(shape("conv2d_1a.bn.running_var"), [32]);
        assert_eq!(shape("conv2d_4b.conv.weight"), [256, 192, 3, 3]);
        assert_eq!(shape("repeat_1.4.branch2.2.conv.weight"), [32, 32, 3, 3]);
        assert_eq!(shape("repeat_1.0.conv2d.bias"), [256]);
        assert_eq!(shape("mixed_6a.branch0.conv.weight"), [384, 256, 3, 3]);
        assert_eq!(shape("mixed_6a.branch1.2.conv.weight"), [256, 192, 3, 3]);
        assert_eq!(shape("repeat_2.9.branch1.1.conv.weight"), [128, 128, 1, 7]);
        assert_eq!(shape("repeat_2.9.branch1.2.conv.weight"), [128, 128, 7, 1]);
        assert_eq!(shape("mixed_7a.branch2.2.conv.weight"), [256, 256, 3, 3]);
        assert_eq!(shape("repeat_3.4.branch1.2.conv.weight"), [192, 192, 3, 1]);
        assert_eq!(shape("block8.conv2d.weight"), [1792, 384, 1, 1]);
        assert_eq!(shape("last_linear.weight"), [512, 1792]);
        assert!(!vars.contains_key("last_linear.bias"));
        assert_eq!(shape("last_bn.running_mean"), [512]);
        // One batch norm per BasicConv2d: stem 6, repeat_1 5×6, mixed_6a 4, repeat_2 10×4,
        // mixed_7a 7, repeat_3 5×4, block8 4, plus last_bn.
        let batch_norms = vars.keys().filter(|k| k.ends_with("running_mean")).count();
        assert_eq!(batch_norms, 6 + 30 + 4 + 40 + 7 + 20 + 4 + 1);
        assert_eq!(model.parameter_count(), 23_482_624);
    }

    #[test]
    fn unknown_arch_lists_the_known_ones() {
        let err = Arch::from_name("resnet9000").unwrap_err();
        assert_eq!(err.code(), "ERR_UNKNOWN_ARCH");
        assert!(err.to_string().contains("resnet9000"));
        assert!(err.to_string().contains("nn1"));
    }
}
