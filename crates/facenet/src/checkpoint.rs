//! Training checkpoints: one safetensors file holding the weights (under the model's own
//! names, so a checkpoint also loads as a weights file), the optimizer state (under
//! `optimizer.`), the step counters, and the caller's JSON state (sampler position,
//! config). Written atomically by [`weights::save_with`], so a crash mid-write leaves the
//! previous checkpoint untouched.

use crate::error::{Error, Result};
use crate::loss::objective::CLASS_HEAD_PREFIX;
use crate::model::FaceNet;
use crate::train::TrainState;
use crate::weights::{self, OPTIMIZER_PREFIX};
use std::collections::HashMap;
use std::path::Path;

const STATE_KEY: &str = "checkpoint";

pub fn save(model: &FaceNet, training: &TrainState, state_json: &str, path: &Path) -> Result<()> {
    let optimizer = training.optimizer();
    let mut tensors: Vec<_> = optimizer
        .state_tensors()
        .into_iter()
        .map(|(name, tensor)| (format!("{OPTIMIZER_PREFIX}{name}"), tensor))
        .collect();
    tensors.extend(training.class_head().iter().flat_map(|h| h.parameters()));
    let metadata = HashMap::from([
        (STATE_KEY.to_owned(), state_json.to_owned()),
        ("step".to_owned(), training.step_count().to_string()),
        ("updates".to_owned(), optimizer.updates().to_string()),
        (
            "optimizer".to_owned(),
            optimizer.config().kind.name().to_owned(),
        ),
    ]);
    weights::save_with(model, &tensors, metadata, path)
}

/// Restores weights, optimizer state and step counters from `path` into `model` and
/// `training`, and returns the caller's JSON state. Everything is checked before the
/// model is touched, so a refused file leaves the model as it was.
pub fn load(model: &FaceNet, training: &mut TrainState, path: &Path) -> Result<String> {
    let bytes = weights::read_file(path)?;
    let meta = weights::file_metadata(path, &bytes)?;
    let invalid = |message: String| Error::Weights(format!("{}: {message}", path.display()));
    let state = meta.get(STATE_KEY).cloned().ok_or_else(|| {
        invalid(
            "this is a weights file, not a training checkpoint (no 'checkpoint' metadata)"
                .to_owned(),
        )
    })?;
    let count = |key: &str| -> Result<i64> {
        meta.get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .ok_or_else(|| invalid(format!("metadata '{key}' is missing or not a count")))
    };
    let (steps, updates) = (count("step")?, count("updates")?);
    let saved_optimizer = meta.get("optimizer").map(String::as_str).unwrap_or("?");
    let optimizer = training.optimizer().config().kind.name();
    if saved_optimizer != optimizer {
        return Err(invalid(format!(
            "the checkpoint was written with optimizer '{saved_optimizer}', this trainer uses '{optimizer}'"
        )));
    }
    let device = model.device();
    // The class head first: a class count that differs is the error to name.
    let head = match training.class_head() {
        Some(head) => {
            let saved: HashMap<String, tch::Tensor> =
                weights::read_prefixed(path, &bytes, CLASS_HEAD_PREFIX)?
                    .into_iter()
                    .map(|(name, t)| {
                        Ok((format!("{CLASS_HEAD_PREFIX}{name}"), t.f_to_device(device)?))
                    })
                    .collect::<Result<_>>()?;
            head.check(&saved, &path.display().to_string())?;
            Some(saved)
        }
        None => None,
    };
    let saved = weights::read_prefixed(path, &bytes, OPTIMIZER_PREFIX)?;
    let expected = training.optimizer().state_tensors();
    for (name, tensor) in &expected {
        match saved.get(name) {
            Some(found) if found.size() == tensor.size() => {}
            Some(found) => {
                return Err(Error::Shape(format!(
                    "{}: optimizer state '{name}' has shape {:?}, expected {:?}",
                    path.display(),
                    found.size(),
                    tensor.size()
                )))
            }
            None => return Err(invalid(format!("optimizer state '{name}' is missing"))),
        }
    }
    weights::load_into(model, path, &bytes)?;
    if let (Some(head), Some(saved)) = (training.class_head(), &head) {
        head.restore(saved)?;
    }
    training.restore(steps, updates, |name| {
        saved.get(name).and_then(|t| t.f_to_device(device).ok())
    })?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::margin::MarginLoss;
    use crate::loss::objective::{LossPhase, LossSchedule};
    use crate::mining::Miner;
    use crate::model::{Arch, ModelConfig};
    use crate::optim::OptimizerConfig;
    use crate::train::TrainConfig;
    use tch::{Kind, Tensor};

    fn batch() -> (Tensor, Tensor) {
        let images = Tensor::arange(8 * 64 * 64 * 3, (Kind::Int64, tch::Device::Cpu))
            .remainder(253)
            .to_kind(Kind::Uint8)
            .view([8, 64, 64, 3]);
        (images, Tensor::from_slice(&[0i64, 0, 1, 1, 2, 2, 3, 3]))
    }

    fn setup() -> (FaceNet, TrainState) {
        setup_with(Default::default(), 0)
    }

    fn setup_with(objective: LossSchedule, classes: i64) -> (FaceNet, TrainState) {
        let model = FaceNet::new(ModelConfig::new(Arch::Tiny)).unwrap();
        let state = TrainState::new(
            &model,
            TrainConfig {
                optimizer: OptimizerConfig::default(),
                loss: Default::default(),
                miner: Miner::default(),
                objective,
                classes,
                seed: 9,
                precision: Default::default(),
                record_distributions: false,
                freeze: Default::default(),
                lr_groups: Vec::new(),
            },
        )
        .unwrap();
        (model, state)
    }

    /// CosFace plus half the triplet loss, then the triplet loss alone from step 4.
    fn combined() -> LossSchedule {
        LossSchedule::new(vec![
            LossPhase {
                from_step: 0,
                triplet_weight: 0.5,
                class_loss: Some(MarginLoss::cosface()),
            },
            LossPhase {
                from_step: 4,
                ..LossPhase::triplet()
            },
        ])
        .unwrap()
    }

    #[test]
    fn resuming_repeats_the_uninterrupted_run_exactly() {
        resume_exactly("a", setup);
    }

    #[test]
    fn resuming_restores_the_class_head_and_its_optimizer_state() {
        resume_exactly("head", || setup_with(combined(), 4));
    }

    #[test]
    fn a_checkpoint_with_another_class_count_is_refused_before_loading() {
        let dir = std::env::temp_dir().join(format!("facenet-ckpt-c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.ckpt");
        let (model, state) = setup_with(combined(), 4);
        save(&model, &state, "{}", &path).unwrap();
        let (other, mut five) = setup_with(combined(), 5);
        let before = other.var_store().variables();
        let err = load(&other, &mut five, &path).unwrap_err();
        assert_eq!(err.code(), "ERR_SHAPE");
        assert!(
            err.to_string().contains("4×128") && err.to_string().contains("5×128"),
            "{err}"
        );
        for (name, tensor) in other.var_store().variables() {
            assert!(tensor.equal(&before[&name]));
        }
        let (_, mut triplet_only) = setup();
        // A triplet run resumes from it (the head is not its concern)...
        load(&other, &mut triplet_only, &path).unwrap();
        // ...but a classifying run cannot resume a triplet checkpoint.
        let plain = dir.join("p.ckpt");
        let (model, state) = setup();
        save(&model, &state, "{}", &plain).unwrap();
        let (m, mut classifying) = setup_with(combined(), 4);
        let err = load(&m, &mut classifying, &plain).unwrap_err();
        assert!(err.to_string().contains("class_head.weights"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn resume_exactly(name: &str, setup: impl Fn() -> (FaceNet, TrainState)) {
        let dir = std::env::temp_dir().join(format!("facenet-ckpt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.ckpt");
        let (images, labels) = batch();

        let (model, mut straight) = setup();
        let mut losses = Vec::new();
        for step in 0..6 {
            if step == 3 {
                save(&model, &straight, "{\"at\":3}", &path).unwrap();
            }
            losses.push(straight.step(&model, &images, &labels, None).unwrap().loss);
        }

        let (resumed_model, mut resumed) = setup();
        let state = load(&resumed_model, &mut resumed, &path).unwrap();
        assert_eq!(state, "{\"at\":3}");
        assert_eq!(resumed.step_count(), 3);
        for (step, expected) in losses.iter().enumerate().skip(3) {
            let loss = resumed
                .step(&resumed_model, &images, &labels, None)
                .unwrap()
                .loss;
            assert_eq!(loss, *expected, "step {step}");
        }
        for (name, tensor) in model.var_store().variables() {
            assert!(
                tensor.equal(&resumed_model.var_store().variables()[&name]),
                "{name}"
            );
        }
        // A checkpoint is also a plain weights file.
        let as_weights = weights::load(&path, tch::Device::Cpu, Some(Arch::Tiny)).unwrap();
        assert_eq!(as_weights.config().arch, Arch::Tiny);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_weights_file_is_not_a_checkpoint_and_the_model_is_untouched() {
        let dir = std::env::temp_dir().join(format!("facenet-ckpt-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let (other, _) = {
            let model = FaceNet::new(ModelConfig {
                seed: 5,
                ..ModelConfig::new(Arch::Tiny)
            })
            .unwrap();
            weights::save(&model, &path).unwrap();
            (model, ())
        };
        let (model, mut state) = setup();
        let before = model.var_store().variables();
        let err = load(&model, &mut state, &path).unwrap_err();
        assert_eq!(err.code(), "ERR_WEIGHTS");
        assert!(
            err.to_string().contains("not a training checkpoint"),
            "{err}"
        );
        for (name, tensor) in model.var_store().variables() {
            assert!(tensor.equal(&before[&name]));
        }
        drop(other);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
