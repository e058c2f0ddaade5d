//! NN1 as the paper's Table 1 gives it (Zeiler&Fergus with 1×1 convs, 220×220 input):
//!
//! ```text
//! conv1 7×7/2 64 → pool1 3×3/2 → rnorm1 → conv2a 1×1 64 → conv2 3×3 192 → rnorm2
//! → pool2 → conv3a 1×1 192 → conv3 3×3 384 → pool3 → conv4a 1×1 384 → conv4 3×3 256
//! → conv5a 1×1 256 → conv5 3×3 256 → conv6a 1×1 256 → conv6 3×3 256 → pool4 (7×7×256)
//! → fc1 maxout p=2 (12544 → 2×4096 → 4096) → fc2 maxout p=2 (4096 → 2×4096 → 4096)
//! → fc7128 (4096 → embedding) → L2 normalization
//! ```
//!
//! Choices where the paper is silent: convs have a bias and no batch norm (the table has
//! none; its normalization is the two LRN layers); ReLU after every conv; "same" padding
//! and 3×3/2 pools with padding 1, which reproduces the table's sizes (110, 55, 28, 14, 7);
//! no dropout. Resulting figures with a 128-d embedding: 140.03M parameters and 1.606G
//! multiply-adds per image (paper: 140M, 1.6B).

use super::layers::{
    feature_maxout, l2_normalize, linear, local_response_norm, record_free,
    record_l2_normalization, ConvGeometry, ConvUnit, LayerTable, Shape, MAX_POOL_3X3_S2,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

pub const INPUT: InputSize = InputSize {
    height: 220,
    width: 220,
};

/// What follows a conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Pool,
    PoolNorm,
    NormPool,
}

/// (name, output channels, kernel, stride, what follows)
const CONVS: [(&str, i64, i64, i64, After); 11] = [
    ("conv1", 64, 7, 2, After::PoolNorm),
    ("conv2a", 64, 1, 1, After::Nothing),
    ("conv2", 192, 3, 1, After::NormPool),
    ("conv3a", 192, 1, 1, After::Nothing),
    ("conv3", 384, 3, 1, After::Pool),
    ("conv4a", 384, 1, 1, After::Nothing),
    ("conv4", 256, 3, 1, After::Nothing),
    ("conv5a", 256, 1, 1, After::Nothing),
    ("conv5", 256, 3, 1, After::Nothing),
    ("conv6a", 256, 1, 1, After::Nothing),
    ("conv6", 256, 3, 1, After::Pool),
];

const PIECES: i64 = 2;
const HIDDEN: i64 = 4096;

#[derive(Debug)]
pub struct Nn1Paper {
    convs: Vec<(ConvUnit, After)>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    fc7128: nn::Linear,
}

impl Nn1Paper {
    pub fn new(path: &nn::Path, table: &mut LayerTable, embedding_dim: i64) -> Self {
        let mut shape = Shape::new(3, INPUT.height, INPUT.width);
        let mut convs = Vec::with_capacity(CONVS.len());
        for &(name, c_out, kernel, stride, after) in &CONVS {
            let geometry = ConvGeometry::same(kernel, stride).with_bias();
            let (conv, out) = ConvUnit::new(&(path / name), table, shape, c_out, geometry, None);
            shape = out;
            let dims = |s: Shape| vec![s.c, s.h, s.w];
            match after {
                After::Nothing => {}
                After::Pool => {
                    shape = MAX_POOL_3X3_S2.record(table, format!("{name}.pool"), "maxpool", shape)
                }
                After::PoolNorm => {
                    shape = MAX_POOL_3X3_S2.record(table, format!("{name}.pool"), "maxpool", shape);
                    record_free(table, format!("{name}.rnorm"), "lrn", dims(shape));
                }
                After::NormPool => {
                    record_free(table, format!("{name}.rnorm"), "lrn", dims(shape));
                    shape = MAX_POOL_3X3_S2.record(table, format!("{name}.pool"), "maxpool", shape);
                }
            }
            convs.push((conv, after));
        }
        let features = shape.numel();
        let fc1 = linear(
            &(path / "fc1"),
            table,
            features,
            HIDDEN * PIECES,
            true,
            "linear + maxout p=2",
        );
        let fc2 = linear(
            &(path / "fc2"),
            table,
            HIDDEN,
            HIDDEN * PIECES,
            true,
            "linear + maxout p=2",
        );
        let fc7128 = linear(
            &(path / "fc7128"),
            table,
            HIDDEN,
            embedding_dim,
            true,
            "linear",
        );
        record_l2_normalization(table, embedding_dim);
        Self {
            convs,
            fc1,
            fc2,
            fc7128,
        }
    }
}

impl ModuleT for Nn1Paper {
    /// N×3×220×220 → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.shallow_clone();
        for (conv, after) in &self.convs {
            xs = xs.apply_t(conv, train);
            xs = match after {
                After::Nothing => xs,
                After::Pool => MAX_POOL_3X3_S2.max(&xs),
                After::PoolNorm => local_response_norm(&MAX_POOL_3X3_S2.max(&xs)),
                After::NormPool => MAX_POOL_3X3_S2.max(&local_response_norm(&xs)),
            };
        }
        let xs = feature_maxout(&xs.flatten(1, -1).apply(&self.fc1), PIECES);
        let xs = feature_maxout(&xs.apply(&self.fc2), PIECES);
        l2_normalize(&xs.apply(&self.fc7128))
    }
}
