//! Which parameters a fine-tune trains, and at which learning rate: frozen layers (by
//! variable-name prefix, or every block but the last N) and per-group learning rates.
//!
//! A prefix names a layer path at a `.` boundary: `units.1` covers `units.1.conv1.weight`
//! but not `units.10.conv1.weight`. Blocks are the layer table's rows with their last path
//! part dropped (`units.13.conv2` → `units.13`, `fc` → `fc`), in forward order, counting
//! only those with parameters: the residual units of dlib's ResNet, the stages of `tiny`.

use crate::error::{Error, Result};
use crate::model::FaceNet;
use tch::Tensor;

/// The parameters a fine-tune leaves as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Freeze {
    /// Layer-name prefixes whose parameters (and batch-norm statistics) stay fixed.
    pub prefixes: Vec<String>,
    /// Freeze every block but the last N (with `prefixes`, both are frozen).
    pub train_last_blocks: Option<usize>,
}

/// Parameters under any of `prefixes` learn at `lr` instead of the base rate (schedules and
/// warm-up scale it alike). The first group that matches a parameter wins.
#[derive(Debug, Clone, PartialEq)]
pub struct LrGroup {
    pub prefixes: Vec<String>,
    pub lr: f64,
}

/// Whether the variable `name` lies under the layer path `prefix`.
pub fn under(name: &str, prefix: &str) -> bool {
    name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'.')
}

/// The model's blocks with parameters, in forward order.
pub fn blocks(model: &FaceNet) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for row in model.summary().layers.iter().filter(|row| row.params > 0) {
        let block = match row.name.rsplit_once('.') {
            Some((parent, _)) => parent.to_owned(),
            None => row.name.clone(),
        };
        if out.last() != Some(&block) {
            out.push(block);
        }
    }
    out
}

/// What a training run updates: each trainable parameter with its learning-rate multiple,
/// and the non-parameter variables (batch-norm running statistics) of frozen layers.
pub struct Plan {
    pub trainable: Vec<(String, Tensor, f64)>,
    pub frozen_parameters: Vec<String>,
    pub frozen_buffers: Vec<(String, Tensor)>,
}

/// Resolves `freeze` and `groups` against the model, sets `requires_grad` accordingly (so
/// frozen parameters get no gradient at all), and refuses prefixes that match nothing.
pub fn plan(model: &FaceNet, freeze: &Freeze, groups: &[LrGroup], base_lr: f64) -> Result<Plan> {
    let vs = model.var_store();
    // A previous run may have frozen some: every parameter of the network starts trainable.
    for tensor in vs.trainable_variables() {
        let _ = tensor.shallow_clone().set_requires_grad(true);
    }
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let known = || {
        let all = blocks(model);
        format!("the model's blocks are {}", all.join(", "))
    };
    let mut frozen_prefixes = Vec::new();
    for prefix in &freeze.prefixes {
        if !variables.iter().any(|(name, _)| under(name, prefix)) {
            return Err(Error::invalid(format!(
                "freeze prefix '{prefix}' matches no parameter of this {} model; {}",
                model.config().arch.name(),
                known()
            )));
        }
        frozen_prefixes.push(prefix.clone());
    }
    if let Some(last) = freeze.train_last_blocks {
        let all = blocks(model);
        if last == 0 || last > all.len() {
            return Err(Error::invalid(format!(
                "trainLastBlocks must be between 1 and {} (the blocks of this {} model: {}), got {last}",
                all.len(),
                model.config().arch.name(),
                all.join(", ")
            )));
        }
        frozen_prefixes.extend(all[..all.len() - last].iter().cloned());
    }
    let frozen = |name: &str| frozen_prefixes.iter().any(|p| under(name, p));
    for group in groups {
        if !(group.lr.is_finite() && group.lr > 0.0) {
            return Err(Error::invalid(format!(
                "the learning rate of group {:?} must be a positive number, got {}",
                group.prefixes, group.lr
            )));
        }
        for prefix in &group.prefixes {
            let matched: Vec<&str> = variables
                .iter()
                .filter(|(name, t)| t.requires_grad() && under(name, prefix))
                .map(|(name, _)| name.as_str())
                .collect();
            if matched.is_empty() {
                return Err(Error::invalid(format!(
                    "learning-rate group prefix '{prefix}' matches no parameter of this {} model; {}",
                    model.config().arch.name(),
                    known()
                )));
            }
            if matched.iter().all(|name| frozen(name)) {
                return Err(Error::invalid(format!(
                    "learning-rate group prefix '{prefix}' matches only frozen parameters"
                )));
            }
        }
    }
    let mut plan = Plan {
        trainable: Vec::new(),
        frozen_parameters: Vec::new(),
        frozen_buffers: Vec::new(),
    };
    for (name, tensor) in variables {
        let parameter = tensor.requires_grad();
        if frozen(&name) {
            if parameter {
                let _ = tensor.shallow_clone().set_requires_grad(false);
                plan.frozen_parameters.push(name);
            } else {
                plan.frozen_buffers.push((name, tensor));
            }
        } else if parameter {
            let lr = groups
                .iter()
                .find(|g| g.prefixes.iter().any(|p| under(&name, p)))
                .map_or(base_lr, |g| g.lr);
            plan.trainable.push((name, tensor, lr / base_lr));
        }
    }
    if plan.trainable.is_empty() {
        return Err(Error::invalid(
            "the freeze options freeze every parameter: nothing would train",
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ModelConfig};

    fn tiny() -> FaceNet {
        FaceNet::new(ModelConfig::new(Arch::Tiny)).unwrap()
    }

    #[test]
    fn prefixes_match_at_dot_boundaries() {
        assert!(under("units.1.conv1.weight", "units.1"));
        assert!(under("fc", "fc"));
        assert!(!under("units.10.conv1.weight", "units.1"));
        assert!(!under("fcx.weight", "fc"));
    }

    #[test]
    fn tiny_blocks_are_its_stages_then_the_head() {
        assert_eq!(
            blocks(&tiny()),
            ["stage0", "stage1", "stage2", "stage3", "fc", "bn"]
        );
    }

    #[test]
    fn all_but_the_last_blocks_freezes_the_rest() {
        let model = tiny();
        let freeze = Freeze {
            prefixes: vec![],
            train_last_blocks: Some(2),
        };
        let plan = plan(&model, &freeze, &[], 0.05).unwrap();
        assert!(plan
            .trainable
            .iter()
            .all(|(n, _, _)| n.starts_with("fc.") || n.starts_with("bn.")));
        assert!(plan
            .frozen_parameters
            .iter()
            .any(|n| n.starts_with("stage0.")));
        // The frozen stages' batch-norm statistics are held too.
        assert!(plan
            .frozen_buffers
            .iter()
            .any(|(n, _)| n.ends_with("running_mean")));
        let stage = model
            .var_store()
            .variables()
            .into_iter()
            // A parameter: the stage's running statistics never take a gradient.
            .find(|(n, _)| n.starts_with("stage0.") && n.ends_with(".weight"))
            .unwrap();
        assert!(!stage.1.requires_grad());
        // A later plan without freezing trains everything again.
        let all = super::plan(&model, &Freeze::default(), &[], 0.05).unwrap();
        assert!(all.frozen_parameters.is_empty());
        assert!(stage.1.requires_grad());
    }

    #[test]
    fn groups_scale_their_parameters_and_unknown_prefixes_are_refused() {
        let model = tiny();
        let groups = [LrGroup {
            prefixes: vec!["stage0".into()],
            lr: 0.005,
        }];
        let plan = plan(&model, &Freeze::default(), &groups, 0.05).unwrap();
        for (name, _, scale) in &plan.trainable {
            let expected = if name.starts_with("stage0.") {
                0.1
            } else {
                1.0
            };
            assert!((scale - expected).abs() < 1e-12, "{name}: {scale}");
        }
        let freeze = Freeze {
            prefixes: vec!["stage9".into()],
            train_last_blocks: None,
        };
        let err = super::plan(&model, &freeze, &[], 0.05).err().unwrap();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
        assert!(err.to_string().contains("'stage9'"), "{err}");
        assert!(err.to_string().contains("stage0, stage1"), "{err}");
        let too_many = Freeze {
            prefixes: vec![],
            train_last_blocks: Some(7),
        };
        let err = super::plan(&model, &too_many, &[], 0.05).err().unwrap();
        assert!(err.to_string().contains("between 1 and 6"), "{err}");
    }
}
