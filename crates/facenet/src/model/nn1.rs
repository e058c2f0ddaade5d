//! NN1 as the project's original notebook built it: the Zeiler&Fergus-style network of
//! FaceNet's Table 1, with batch norm after every convolution and a lighter head.
//!
//! ```text
//! input        3×220×220
//! conv1   7×7/2  → 64×110×110      pool1 3×3/2 → 64×55×55
//! conv2a  1×1    → 64×55×55
//! conv2   3×3    → 192×55×55       pool2 3×3/2 → 192×28×28
//! conv3a  1×1    → 192×28×28
//! conv3   3×3    → 384×28×28       pool3 3×3/2 → 384×14×14
//! conv4a  1×1    → 384   conv4 3×3 → 256
//! conv5a  1×1    → 256   conv5 3×3 → 256
//! conv6a  1×1    → 256   conv6 3×3 → 256×14×14   pool4 3×3/2 → 256×7×7
//! maxout (pairs of channels)      → 128×7×7 = 6272
//! fc1     6272 → 4096, ReLU, dropout 0.2
//! fc2     4096 → embedding_dim, then L2 normalization
//! ```
//!
//! Every conv is followed by batch norm and ReLU. With `embedding_dim = 128` this has
//! 29.39M parameters; the paper's own NN1 head (maxout fc layers, 140M parameters) is a
//! separate architecture.

use super::layers::{
    channel_maxout, l2_normalize, linear, record_free, record_l2_normalization, ConvUnit,
    LayerTable, Shape, MAX_POOL_3X3_S2,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

pub const INPUT: InputSize = InputSize {
    height: 220,
    width: 220,
};

/// (name, input channels, output channels, kernel, stride, max-pool after it)
const CONVS: [(&str, i64, i64, i64, i64, bool); 11] = [
    ("conv1", 3, 64, 7, 2, true),
    ("conv2a", 64, 64, 1, 1, false),
    ("conv2", 64, 192, 3, 1, true),
    ("conv3a", 192, 192, 1, 1, false),
    ("conv3", 192, 384, 3, 1, true),
    ("conv4a", 384, 384, 1, 1, false),
    ("conv4", 384, 256, 3, 1, false),
    ("conv5a", 256, 256, 1, 1, false),
    ("conv5", 256, 256, 3, 1, false),
    ("conv6a", 256, 256, 1, 1, false),
    ("conv6", 256, 256, 3, 1, true),
];

const MAXOUT_PIECES: i64 = 2;
const FEATURES: i64 = 256 / MAXOUT_PIECES * 7 * 7;
const HIDDEN: i64 = 4096;
const DROPOUT: f64 = 0.2;

#[derive(Debug)]
pub struct Nn1 {
    convs: Vec<(ConvUnit, bool)>,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Nn1 {
    pub fn new(path: &nn::Path, table: &mut LayerTable, embedding_dim: i64) -> Self {
        let mut shape = Shape::new(3, INPUT.height, INPUT.width);
        let mut convs = Vec::with_capacity(CONVS.len());
        for &(name, c_in, c_out, kernel, stride, pool) in &CONVS {
            debug_assert_eq!(c_in, shape.c);
            let (conv, out) = ConvUnit::same(&(path / name), table, shape, c_out, kernel, stride);
            shape = out;
            if pool {
                shape = MAX_POOL_3X3_S2.record(table, format!("{name}.pool"), "maxpool", shape);
            }
            convs.push((conv, pool));
        }
        shape = shape.with_c(shape.c / MAXOUT_PIECES);
        record_free(
            table,
            "maxout".to_owned(),
            "channel maxout p=2",
            vec![shape.c, shape.h, shape.w],
        );
        debug_assert_eq!(shape.numel(), FEATURES);
        let fc1 = linear(
            &(path / "fc1"),
            table,
            FEATURES,
            HIDDEN,
            true,
            "linear + relu + dropout",
        );
        let fc2 = linear(
            &(path / "fc2"),
            table,
            HIDDEN,
            embedding_dim,
            true,
            "linear",
        );
        record_l2_normalization(table, embedding_dim);
        Self { convs, fc1, fc2 }
    }
}

impl ModuleT for Nn1 {
    /// N×3×220×220 → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.shallow_clone();
        for (conv, pool) in &self.convs {
            xs = xs.apply_t(conv, train);
            if *pool {
                xs = MAX_POOL_3X3_S2.max(&xs);
            }
        }
        let xs = channel_maxout(&xs, MAXOUT_PIECES)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .dropout(DROPOUT, train)
            .apply(&self.fc2);
        l2_normalize(&xs)
    }
}
