//! What a training step minimizes: the triplet loss, a classification loss over a class head,
//! or a weighted sum of both, and the steps at which that changes (a margin-softmax warm-up
//! followed by triplet fine-tuning, say). The class head lives here too: it trains with the
//! network and is checkpointed with it, but it is not part of the embedding model.

use super::margin::MarginLoss;
use crate::error::{Error, Result};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// Name prefix of the class head's tensors in a checkpoint. Weights files ignore them, so a
/// checkpoint still loads as a model.
pub const CLASS_HEAD_PREFIX: &str = "class_head.";

/// What the steps from `from_step` on minimize: `triplet_weight` × the triplet loss plus the
/// classification loss, when there is one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossPhase {
    pub from_step: i64,
    pub triplet_weight: f64,
    pub class_loss: Option<MarginLoss>,
}

impl LossPhase {
    /// The paper's objective: the triplet loss alone.
    pub fn triplet() -> Self {
        LossPhase {
            from_step: 0,
            triplet_weight: 1.0,
            class_loss: None,
        }
    }

    pub fn uses_triplets(&self) -> bool {
        self.triplet_weight > 0.0
    }
}

/// The phases of a run, the first from step 0, each until the next one's `from_step`.
#[derive(Debug, Clone, PartialEq)]
pub struct LossSchedule {
    phases: Vec<LossPhase>,
}

impl Default for LossSchedule {
    fn default() -> Self {
        LossSchedule {
            phases: vec![LossPhase::triplet()],
        }
    }
}

impl LossSchedule {
    pub fn new(phases: Vec<LossPhase>) -> Result<Self> {
        let Some(first) = phases.first() else {
            return Err(Error::invalid("a loss schedule needs at least one phase"));
        };
        if first.from_step != 0 {
            return Err(Error::invalid(format!(
                "the first loss phase must start at step 0, got {}",
                first.from_step
            )));
        }
        for pair in phases.windows(2) {
            if pair[1].from_step <= pair[0].from_step {
                return Err(Error::invalid(format!(
                    "loss phases must start at increasing steps, got {} after {}",
                    pair[1].from_step, pair[0].from_step
                )));
            }
        }
        for phase in &phases {
            let w = phase.triplet_weight;
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::invalid(format!(
                    "tripletWeight must be a finite number ≥ 0, got {w}"
                )));
            }
            match phase.class_loss {
                Some(loss) => loss.check()?,
                None if w == 0.0 => {
                    return Err(Error::invalid(format!(
                        "the loss phase from step {} has a triplet weight of 0 and no classification loss: it would train nothing",
                        phase.from_step
                    )))
                }
                None => {}
            }
        }
        Ok(LossSchedule { phases })
    }

    pub fn phases(&self) -> &[LossPhase] {
        &self.phases
    }

    /// The phase that step `step` (0-based) trains with.
    pub fn at(&self, step: i64) -> &LossPhase {
        self.phases
            .iter()
            .rev()
            .find(|phase| phase.from_step <= step)
            .unwrap_or(&self.phases[0])
    }

    /// Whether any phase needs a class head, and whether it needs class centres.
    fn head_matrices(&self) -> (bool, bool) {
        let classified = |f: fn(&MarginLoss) -> bool| {
            self.phases
                .iter()
                .any(|p| p.class_loss.as_ref().is_some_and(f))
        };
        (
            classified(|_| true),
            classified(|l| matches!(l, MarginLoss::SoftmaxCenter { .. })),
        )
    }
}

/// The class-weight matrix (classes × d) of the margin losses, and the class centres of the
/// centre loss. One head serves every phase of a schedule, so switching between margin
/// losses keeps what the weights learned.
pub struct ClassHead {
    weights: Tensor,
    centers: Option<Tensor>,
}

impl ClassHead {
    /// A head for `schedule`, or `None` when no phase classifies. The weights start as
    /// insightface's, N(0, 0.01²), drawn from `seed`; the centres at 0.
    pub fn for_schedule(
        schedule: &LossSchedule,
        classes: i64,
        dim: i64,
        device: Device,
        seed: i64,
    ) -> Result<Option<Self>> {
        let (weights, centers) = schedule.head_matrices();
        if !weights {
            return Ok(None);
        }
        if classes < 2 {
            return Err(Error::invalid(format!(
                "a classification loss needs at least 2 classes (identities), got {classes}"
            )));
        }
        tch::manual_seed(seed);
        let weights = Tensor::f_randn([classes, dim], (Kind::Float, Device::Cpu))?
            .f_mul_scalar(0.01)?
            .f_to_device(device)?
            .set_requires_grad(true);
        let centers = if centers {
            Some(Tensor::f_zeros([classes, dim], (Kind::Float, device))?.set_requires_grad(true))
        } else {
            None
        };
        Ok(Some(ClassHead { weights, centers }))
    }

    pub fn classes(&self) -> i64 {
        self.weights.size()[0]
    }

    pub fn weights(&self) -> &Tensor {
        &self.weights
    }

    pub fn centers(&self) -> Option<&Tensor> {
        self.centers.as_ref()
    }

    /// The head's tensors under their checkpoint names (handles sharing their storage).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named = vec![(
            format!("{CLASS_HEAD_PREFIX}weights"),
            self.weights.shallow_clone(),
        )];
        if let Some(centers) = &self.centers {
            named.push((
                format!("{CLASS_HEAD_PREFIX}centers"),
                centers.shallow_clone(),
            ));
        }
        named
    }

    /// Checks that `saved` (a checkpoint's tensors, names with the prefix) holds this head's
    /// tensors at this head's shapes; `what` names the file in the error.
    pub fn check(&self, saved: &HashMap<String, Tensor>, what: &str) -> Result<()> {
        for (name, tensor) in self.parameters() {
            match saved.get(&name) {
                None => {
                    return Err(Error::Weights(format!(
                        "{what}: the checkpoint has no '{name}': it was not trained with a classification loss, or with a different one"
                    )))
                }
                Some(found) if found.size() != tensor.size() => {
                    let (was, is) = (found.size(), tensor.size());
                    return Err(Error::Shape(format!(
                        "{what}: the checkpoint's class head '{name}' is {}×{}, this run's is {}×{} ({} classes in the data): resume on the data it was trained on",
                        was.first().copied().unwrap_or(0),
                        was.get(1).copied().unwrap_or(0),
                        is[0],
                        is[1],
                        is[0]
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Copies checked tensors (see [`check`](Self::check)) into the head.
    pub fn restore(&self, saved: &HashMap<String, Tensor>) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        for (name, mut tensor) in self.parameters() {
            let found = saved
                .get(&name)
                .ok_or_else(|| Error::invalid(format!("no '{name}' to restore")))?;
            tensor.f_copy_(found)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arcface_from(step: i64, triplet_weight: f64) -> LossPhase {
        LossPhase {
            from_step: step,
            triplet_weight,
            class_loss: Some(MarginLoss::arcface()),
        }
    }

    #[test]
    fn phases_are_picked_by_step() {
        let schedule = LossSchedule::new(vec![
            arcface_from(0, 0.0),
            LossPhase {
                from_step: 100,
                ..LossPhase::triplet()
            },
        ])
        .unwrap();
        assert!(schedule.at(0).class_loss.is_some());
        assert!(schedule.at(99).class_loss.is_some());
        assert!(schedule.at(100).class_loss.is_none());
        assert!(schedule.at(10_000).uses_triplets());
        assert_eq!(schedule.head_matrices(), (true, false));
    }

    #[test]
    fn bad_schedules_are_refused() {
        let err = |phases| LossSchedule::new(phases).unwrap_err().to_string();
        assert!(err(vec![]).contains("at least one phase"));
        assert!(err(vec![arcface_from(5, 0.0)]).contains("step 0"));
        assert!(err(vec![arcface_from(0, 0.0), arcface_from(0, 1.0)]).contains("increasing"));
        assert!(err(vec![LossPhase {
            triplet_weight: 0.0,
            ..LossPhase::triplet()
        }])
        .contains("train nothing"));
        assert!(err(vec![arcface_from(0, -1.0)]).contains("tripletWeight"));
        let wide = LossPhase {
            class_loss: Some(MarginLoss::ArcFace {
                margin: 2.0,
                scale: 64.0,
                easy_margin: false,
            }),
            ..arcface_from(0, 0.0)
        };
        assert!(err(vec![wide]).contains("π/2"));
    }

    #[test]
    fn the_head_is_seeded_and_checked_against_saved_shapes() {
        let schedule = LossSchedule::new(vec![LossPhase {
            class_loss: Some(MarginLoss::softmax_center()),
            ..LossPhase::triplet()
        }])
        .unwrap();
        let make = |classes| {
            ClassHead::for_schedule(&schedule, classes, 8, Device::Cpu, 3)
                .unwrap()
                .unwrap()
        };
        let (a, b) = (make(5), make(5));
        assert!(a.weights().equal(b.weights()));
        assert_eq!(a.parameters().len(), 2);
        let saved: HashMap<String, Tensor> = make(6).parameters().into_iter().collect();
        let err = a.check(&saved, "x.ckpt").unwrap_err().to_string();
        assert!(err.contains("6×8") && err.contains("5×8"), "{err}");
        let one = ClassHead::for_schedule(&schedule, 1, 8, Device::Cpu, 3);
        assert!(one
            .err()
            .unwrap()
            .to_string()
            .contains("at least 2 classes"));
        let triplets = LossSchedule::default();
        assert!(ClassHead::for_schedule(&triplets, 5, 8, Device::Cpu, 3)
            .unwrap()
            .is_none());
    }
}
