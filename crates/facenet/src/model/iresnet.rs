//! insightface's `iresnet` (the "improved" ResNet of ArcFace, Deng et al. 2019): the face
//! backbone most face-recognition users know, at 112×112.
//!
//! ```text
//! 3×112×112 → conv 3×3 64 → bn → prelu
//!   → 4 stages of IBasicBlocks (64, 128, 256, 512 channels; the first block of each stage
//!     strides by 2): bn → conv 3×3 → bn → prelu → conv 3×3 (/2) → bn, + identity
//!     (a 1×1/2 conv + bn where the shape changes)
//!   → bn → flatten (512×7×7) → fc → bn (scale fixed at 1) → L2 normalization
//! ```
//!
//! Blocks per stage: IR-18 [2, 2, 2, 2], IR-34 [3, 4, 6, 3], IR-50 [3, 4, 14, 3]. Tensor
//! names follow insightface's `iresnet.py` (`layer1.0.bn1`, `layer1.0.downsample.0`,
//! `features`…). Its last batch norm's scale is fixed at 1, as there, so it is a buffer
//! and not counted among the trainable parameters. Weights start from this crate's Xavier
//! initialization (insightface draws N(0, 0.1)).

use super::layers::{
    l2_normalize, linear, name_of, push_row, record_free, record_l2_normalization, Conv,
    ConvGeometry, LayerTable, Shape,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

pub const INPUT: InputSize = InputSize {
    height: 112,
    width: 112,
};

const EPS: f64 = 1e-5;

/// A batch norm recorded in the layer table.
fn bn2d(path: &nn::Path, table: &mut LayerTable, shape: Shape) -> nn::BatchNorm {
    push_row(
        table,
        name_of(path),
        "batchnorm".into(),
        vec![shape.c, shape.h, shape.w],
        2 * shape.c,
        0,
    );
    nn::batch_norm2d(
        path,
        shape.c,
        nn::BatchNormConfig {
            eps: EPS,
            ..Default::default()
        },
    )
}

/// PReLU with one slope per channel, 0.25 at first (PyTorch's `nn.PReLU(c)`).
fn prelu(path: &nn::Path, table: &mut LayerTable, shape: Shape) -> Tensor {
    push_row(
        table,
        name_of(path),
        "prelu".into(),
        vec![shape.c, shape.h, shape.w],
        shape.c,
        0,
    );
    path.var("weight", &[shape.c], nn::Init::Const(0.25))
}

#[derive(Debug)]
struct Block {
    bn1: nn::BatchNorm,
    conv1: Conv,
    bn2: nn::BatchNorm,
    prelu: Tensor,
    conv2: Conv,
    bn3: nn::BatchNorm,
    downsample: Option<(Conv, nn::BatchNorm)>,
}

impl Block {
    fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        input: Shape,
        planes: i64,
        stride: i64,
    ) -> (Self, Shape) {
        let bn1 = bn2d(&(path / "bn1"), table, input);
        let (conv1, mid) = Conv::new(
            &(path / "conv1"),
            table,
            input,
            planes,
            ConvGeometry::same(3, 1),
        );
        let bn2 = bn2d(&(path / "bn2"), table, mid);
        let prelu = prelu(&(path / "prelu"), table, mid);
        let (conv2, out) = Conv::new(
            &(path / "conv2"),
            table,
            mid,
            planes,
            ConvGeometry::same(3, stride),
        );
        let bn3 = bn2d(&(path / "bn3"), table, out);
        let downsample = (stride != 1 || input.c != planes).then(|| {
            let down = path / "downsample";
            let (conv, shape) = Conv::new(
                &(&down / "0"),
                table,
                input,
                planes,
                ConvGeometry::valid(1, stride),
            );
            (conv, bn2d(&(&down / "1"), table, shape))
        });
        record_free(
            table,
            format!("{}.add", name_of(path)),
            "residual add",
            vec![out.c, out.h, out.w],
        );
        (
            Self {
                bn1,
                conv1,
                bn2,
                prelu,
                conv2,
                bn3,
                downsample,
            },
            out,
        )
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs
            .apply_t(&self.bn1, train)
            .apply(&self.conv1)
            .apply_t(&self.bn2, train)
            .prelu(&self.prelu)
            .apply(&self.conv2)
            .apply_t(&self.bn3, train);
        let identity = match &self.downsample {
            Some((conv, bn)) => xs.apply(conv).apply_t(bn, train),
            None => xs.shallow_clone(),
        };
        out + identity
    }
}

#[derive(Debug)]
pub struct IResNet {
    conv1: Conv,
    bn1: nn::BatchNorm,
    prelu: Tensor,
    blocks: Vec<Block>,
    bn2: nn::BatchNorm,
    fc: nn::Linear,
    features_weight: Tensor,
    features_bias: Tensor,
    features_mean: Tensor,
    features_var: Tensor,
}

impl IResNet {
    /// `layers`: blocks per stage, e.g. `[3, 4, 14, 3]` for IR-50.
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        layers: [usize; 4],
        embedding_dim: i64,
    ) -> Self {
        let mut shape = Shape::new(3, INPUT.height, INPUT.width);
        let (conv1, out) = Conv::new(
            &(path / "conv1"),
            table,
            shape,
            64,
            ConvGeometry::same(3, 1),
        );
        shape = out;
        let bn1 = bn2d(&(path / "bn1"), table, shape);
        let prelu = prelu(&(path / "prelu"), table, shape);
        let mut blocks = Vec::new();
        for (stage, (&count, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
            for k in 0..count {
                let block_path = path / format!("layer{}", stage + 1) / k.to_string();
                let (block, out) = Block::new(
                    &block_path,
                    table,
                    shape,
                    planes,
                    if k == 0 { 2 } else { 1 },
                );
                blocks.push(block);
                shape = out;
            }
        }
        let bn2 = bn2d(&(path / "bn2"), table, shape);
        let fc = linear(
            &(path / "fc"),
            table,
            shape.numel(),
            embedding_dim,
            true,
            "linear",
        );
        let features = path / "features";
        push_row(
            table,
            name_of(&features),
            "batchnorm (scale fixed at 1)".into(),
            vec![embedding_dim],
            embedding_dim,
            0,
        );
        record_l2_normalization(table, embedding_dim);
        Self {
            conv1,
            bn1,
            prelu,
            blocks,
            bn2,
            fc,
            features_weight: features.ones_no_train("weight", &[embedding_dim]),
            features_bias: features.zeros("bias", &[embedding_dim]),
            features_mean: features.zeros_no_train("running_mean", &[embedding_dim]),
            features_var: features.ones_no_train("running_var", &[embedding_dim]),
        }
    }
}

impl ModuleT for IResNet {
    /// N×3×112×112 → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .prelu(&self.prelu);
        for block in &self.blocks {
            xs = xs.apply_t(block, train);
        }
        let xs = xs.apply_t(&self.bn2, train).flatten(1, -1).apply(&self.fc);
        let xs = Tensor::batch_norm(
            &xs,
            Some(&self.features_weight),
            Some(&self.features_bias),
            Some(&self.features_mean),
            Some(&self.features_var),
            train,
            0.1,
            EPS,
            false,
        );
        l2_normalize(&xs)
    }
}
