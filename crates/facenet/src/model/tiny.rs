//! `tiny`: a small plain CNN for tests and quick demos, not from the paper.
//!
//! ```text
//! 3×64×64 → conv 3×3/2 w0 → conv 3×3 w0 (32×32) → maxpool 3×3/2
//!         → [conv 3×3 w_i → conv 3×3 w_i → maxpool 3×3/2] for the middle widths
//!         → conv 3×3 w_last → global avgpool → fc → L2 normalization
//! ```
//!
//! Every conv has batch norm and ReLU, so it trains quickly from random weights. With the
//! default widths (32, 64, 128, 256) and a 128-d embedding: 0.62M parameters and 43M
//! multiply-adds per image.

use super::layers::{
    global_avg_pool, l2_normalize, linear, record_free, ConvUnit, LayerTable, Shape,
    MAX_POOL_3X3_S2,
};
use super::InputSize;
use tch::{nn, nn::ModuleT, Tensor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinyConfig {
    pub input: InputSize,
    /// Channels per stage; at least two stages.
    pub widths: Vec<i64>,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            input: InputSize {
                height: 64,
                width: 64,
            },
            widths: vec![32, 64, 128, 256],
        }
    }
}

#[derive(Debug)]
enum Step {
    Conv(Box<ConvUnit>),
    Pool,
}

#[derive(Debug)]
pub struct Tiny {
    steps: Vec<Step>,
    fc: nn::Linear,
}

impl Tiny {
    pub fn new(
        path: &nn::Path,
        table: &mut LayerTable,
        config: &TinyConfig,
        embedding_dim: i64,
    ) -> Self {
        let mut shape = Shape::new(3, config.input.height, config.input.width);
        let mut steps = Vec::new();
        let last = config.widths.len() - 1;
        for (stage, &width) in config.widths.iter().enumerate() {
            let convs: &[(&str, i64)] = match stage {
                0 => &[("conv1", 2), ("conv2", 1)],
                s if s == last => &[("conv1", 1)],
                _ => &[("conv1", 1), ("conv2", 1)],
            };
            for &(name, stride) in convs {
                let stage_path = path / format!("stage{stage}") / name;
                let (unit, out) = ConvUnit::same(&stage_path, table, shape, width, 3, stride);
                steps.push(Step::Conv(Box::new(unit)));
                shape = out;
            }
            if stage != last {
                shape =
                    MAX_POOL_3X3_S2.record(table, format!("stage{stage}.pool"), "maxpool", shape);
                steps.push(Step::Pool);
            }
        }
        record_free(table, "avgpool".into(), "global avgpool", vec![shape.c]);
        let fc = linear(
            &(path / "fc"),
            table,
            shape.c,
            embedding_dim,
            true,
            "linear",
        );
        record_free(
            table,
            "l2norm".into(),
            "L2 normalization",
            vec![embedding_dim],
        );
        Self { steps, fc }
    }
}

impl ModuleT for Tiny {
    /// N×3×H×W → N×embedding_dim, rows of unit norm.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.shallow_clone();
        for step in &self.steps {
            xs = match step {
                Step::Conv(unit) => xs.apply_t(&**unit, train),
                Step::Pool => MAX_POOL_3X3_S2.max(&xs),
            };
        }
        l2_normalize(&global_avg_pool(&xs).apply(&self.fc))
    }
}
