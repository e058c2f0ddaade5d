//! Optimizers, learning-rate schedules and gradient clipping.
//!
//! Written over plain tensors instead of tch's `nn::Optimizer` because a checkpoint must
//! hold the optimizer state (momentum buffers, AdaGrad accumulators, Adam moments) for an
//! exact resume, and tch does not expose it. The update rules follow `torch.optim`
//! (SGD, Adagrad, Adam, AdamW) with their default epsilons, so results are comparable.

use crate::error::{Error, Result};
use crate::foreach;
use tch::{nn::VarStore, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD`: optional momentum (dampening 0) and Nesterov.
    Sgd { momentum: f64, nesterov: bool },
    /// `torch.optim.Adagrad` with lr_decay 0 and a zero initial accumulator; the paper's.
    Adagrad { eps: f64 },
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam { beta1: f64, beta2: f64, eps: f64 },
    /// `torch.optim.AdamW` (decoupled weight decay).
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

impl OptimizerKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::Adagrad { .. } => "adagrad",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }

    /// The state tensors each parameter needs, by slot name.
    fn slots(&self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd { momentum, .. } if *momentum != 0.0 => &["momentum"],
            OptimizerKind::Sgd { .. } => &[],
            OptimizerKind::Adagrad { .. } => &["sum"],
            OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` steps.
    Step {
        every: i64,
        gamma: f64,
    },
    /// Cosine from the base rate down to `min_lr` over `total_steps`.
    Cosine {
        total_steps: i64,
        min_lr: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Linear warmup from 0 to the scheduled rate over this many steps.
    pub warmup_steps: i64,
    /// Clip the global gradient L2 norm to this value.
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimizerConfig {
    /// The paper's choice: AdaGrad, learning rate 0.05.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adagrad { eps: 1e-10 },
            lr: 0.05,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            max_grad_norm: None,
        }
    }
}

impl OptimizerConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be a positive number, got {value}"
                )))
            }
        };
        let fraction = |name: &str, value: f64| {
            if (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{name} must be in [0, 1), got {value}"
                )))
            }
        };
        positive("lr", self.lr)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "weightDecay must be a non-negative number, got {}",
                self.weight_decay
            )));
        }
        if self.warmup_steps < 0 {
            return Err(Error::invalid(format!(
                "warmupSteps must be non-negative, got {}",
                self.warmup_steps
            )));
        }
        if let Some(max) = self.max_grad_norm {
            positive("maxGradNorm", max)?;
        }
        match self.kind {
            OptimizerKind::Sgd { momentum, nesterov } => {
                fraction("momentum", momentum)?;
                if nesterov && momentum == 0.0 {
                    return Err(Error::invalid("nesterov needs a momentum above 0"));
                }
            }
            OptimizerKind::Adagrad { eps } => positive("eps", eps)?,
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                fraction("beta1", beta1)?;
                fraction("beta2", beta2)?;
                positive("eps", eps)?;
            }
        }
        match self.schedule {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, gamma } => {
                if every < 1 {
                    return Err(Error::invalid(format!(
                        "schedule step 'every' must be at least 1, got {every}"
                    )));
                }
                positive("gamma", gamma)
            }
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => {
                if total_steps < 1 {
                    return Err(Error::invalid(format!(
                        "cosine schedule needs totalSteps of at least 1, got {total_steps}"
                    )));
                }
                if !(min_lr.is_finite() && min_lr >= 0.0 && min_lr <= self.lr) {
                    return Err(Error::invalid(format!(
                        "minLr must be in [0, lr], got {min_lr}"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: i64) -> f64 {
        let scheduled = match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { every, gamma } => self.lr * gamma.powi((step / every) as i32),
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => {
                let progress = (step.min(total_steps) as f64) / total_steps as f64;
                min_lr + 0.5 * (self.lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        if step < self.warmup_steps {
            scheduled * (step + 1) as f64 / (self.warmup_steps + 1) as f64
        } else {
            scheduled
        }
    }
}

/// The trainable variables of `vs`, by name.
pub fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .filter(|(_, tensor)| tensor.requires_grad())
        .collect()
}

/// An optimizer over a set of named parameters (updated in name order).
pub struct Optimizer {
    config: OptimizerConfig,
    params: Vec<(String, Tensor)>,
    /// Each parameter's learning rate as a multiple of the scheduled one (its group's
    /// rate over the base rate), aligned with `params`.
    lr_scales: Vec<f64>,
    /// state[slot][param]
    state: Vec<Vec<Tensor>>,
    /// Completed updates; Adam's bias correction reads it.
    updates: i64,
}

impl Optimizer {
    pub fn new(vs: &VarStore, config: OptimizerConfig) -> Result<Self> {
        Self::over(trainable(vs), config)
    }

    /// An optimizer over named parameters, e.g. a model's and a loss's class weights.
    pub fn over(params: Vec<(String, Tensor)>, config: OptimizerConfig) -> Result<Self> {
        Self::over_scaled(
            params.into_iter().map(|(n, t)| (n, t, 1.0)).collect(),
            config,
        )
    }

    /// An optimizer whose parameters each carry a learning-rate multiple of the scheduled
    /// rate (per-group learning rates: a backbone at a tenth of the head's, say).
    pub fn over_scaled(
        mut scaled: Vec<(String, Tensor, f64)>,
        config: OptimizerConfig,
    ) -> Result<Self> {
        config.validate()?;
        // A stable order, so checkpoints and updates do not depend on hash-map order.
        scaled.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some((name, _, scale)) = scaled
            .iter()
            .find(|(_, _, scale)| !(scale.is_finite() && *scale > 0.0))
        {
            return Err(Error::invalid(format!(
                "parameter '{name}' has a learning-rate multiple of {scale}; it must be a positive number"
            )));
        }
        let lr_scales = scaled.iter().map(|(_, _, scale)| *scale).collect();
        let params: Vec<(String, Tensor)> = scaled.into_iter().map(|(n, t, _)| (n, t)).collect();
        let state = config
            .kind
            .slots()
            .iter()
            .map(|_| {
                params
                    .iter()
                    .map(|(_, p)| p.f_zeros_like())
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            config,
            params,
            lr_scales,
            state,
            updates: 0,
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn updates(&self) -> i64 {
        self.updates
    }

    /// The names of the parameters this optimizer updates, in update order.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(name, _)| name.as_str())
    }

    /// The parameters that received a gradient in the last backward pass: their indices,
    /// the parameters and the gradients (handles sharing storage with the originals).
    fn live(&self) -> (Vec<usize>, Vec<Tensor>, Vec<Tensor>) {
        let mut indices = Vec::with_capacity(self.params.len());
        let mut params = Vec::with_capacity(self.params.len());
        let mut grads = Vec::with_capacity(self.params.len());
        for (index, (_, param)) in self.params.iter().enumerate() {
            let grad = param.grad();
            if grad.defined() {
                indices.push(index);
                params.push(param.shallow_clone());
                grads.push(grad);
            }
        }
        (indices, params, grads)
    }

    /// One state slot's tensors for the given parameters.
    fn slot(&self, slot: usize, indices: &[usize]) -> Vec<Tensor> {
        indices
            .iter()
            .map(|&i| self.state[slot][i].shallow_clone())
            .collect()
    }

    /// The gradients of the last backward pass (handles sharing storage with the
    /// parameters' `.grad`), in update order; parameters that got none are left out.
    pub fn gradients(&self) -> Vec<Tensor> {
        self.live().2
    }

    pub fn zero_grad(&mut self) -> Result<()> {
        let (_, _, grads) = self.live();
        foreach::zero_(&grads)
    }

    /// Global L2 norm of the gradients; clips them in place when above the configured max.
    pub fn clip_grad_norm(&mut self) -> Result<f64> {
        let (_, _, grads) = self.live();
        if grads.is_empty() {
            return Ok(0.0);
        }
        // Per-tensor norms need no full-size temporaries; only the N scalars are combined.
        let norms = foreach::norm(&grads, 2.0)?;
        let norm = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
        if let Some(max) = self.config.max_grad_norm {
            if norm.is_finite() && norm > max {
                foreach::mul_scalar_(&grads, max / (norm + 1e-6))?;
            }
        }
        Ok(norm)
    }

    /// One update with the current gradients at learning rate `lr` (the caller owns the
    /// step count that the schedule reads: see [`OptimizerConfig::lr_at`]). Each rule is a
    /// few multi-tensor ops over all parameters, as torch.optim's foreach implementations.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let (indices, params, grads) = self.live();
        // One pass of the rule per distinct learning-rate multiple (one pass without groups).
        let mut scales: Vec<f64> = indices.iter().map(|&i| self.lr_scales[i]).collect();
        scales.sort_by(f64::total_cmp);
        scales.dedup();
        for scale in scales {
            let mut group = (Vec::new(), Vec::new(), Vec::new());
            for (k, &index) in indices.iter().enumerate() {
                if self.lr_scales[index] == scale {
                    group.0.push(index);
                    group.1.push(params[k].shallow_clone());
                    group.2.push(grads[k].shallow_clone());
                }
            }
            self.update(&group.0, &group.1, group.2, lr * scale)?;
        }
        self.updates += 1;
        Ok(())
    }

    /// The update rule over some parameters (`indices` into `self.params`) at rate `lr`.
    fn update(
        &self,
        indices: &[usize],
        params: &[Tensor],
        grads: Vec<Tensor>,
        lr: f64,
    ) -> Result<()> {
        let wd = self.config.weight_decay;
        let t = (self.updates + 1) as f64;
        let grads = if wd != 0.0 && !matches!(self.config.kind, OptimizerKind::AdamW { .. }) {
            foreach::add(&grads, params, wd)?
        } else {
            grads
        };
        match self.config.kind {
            OptimizerKind::Sgd { momentum, nesterov } => {
                let update = if momentum != 0.0 {
                    let bufs = self.slot(0, indices);
                    if self.updates == 0 {
                        foreach::copy_(&bufs, &grads)?;
                    } else {
                        foreach::mul_scalar_(&bufs, momentum)?;
                        foreach::add_(&bufs, &grads, 1.0)?;
                    }
                    if nesterov {
                        foreach::add(&grads, &bufs, momentum)?
                    } else {
                        bufs
                    }
                } else {
                    grads
                };
                foreach::add_(params, &update, -lr)?;
            }
            OptimizerKind::Adagrad { eps } => {
                let sums = self.slot(0, indices);
                foreach::addcmul_(&sums, &grads, &grads, 1.0)?;
                let std = foreach::sqrt(&sums)?;
                foreach::add_scalar_(&std, eps)?;
                foreach::addcdiv_(params, &grads, &std, -lr)?;
            }
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                if let OptimizerKind::AdamW { .. } = self.config.kind {
                    foreach::mul_scalar_(params, 1.0 - lr * wd)?;
                }
                let exp_avg = self.slot(0, indices);
                let exp_avg_sq = self.slot(1, indices);
                foreach::mul_scalar_(&exp_avg, beta1)?;
                foreach::add_(&exp_avg, &grads, 1.0 - beta1)?;
                foreach::mul_scalar_(&exp_avg_sq, beta2)?;
                foreach::addcmul_(&exp_avg_sq, &grads, &grads, 1.0 - beta2)?;
                let bias1 = 1.0 - beta1.powf(t);
                let bias2 = 1.0 - beta2.powf(t);
                let denom = foreach::sqrt(&exp_avg_sq)?;
                foreach::div_scalar_(&denom, bias2.sqrt())?;
                foreach::add_scalar_(&denom, eps)?;
                foreach::addcdiv_(params, &exp_avg, &denom, -lr / bias1)?;
            }
        }
        Ok(())
    }

    /// The optimizer's state as named tensors ("<param>.<slot>"), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut named = Vec::new();
        for (slot_index, slot) in self.config.kind.slots().iter().enumerate() {
            for (param_index, (name, _)) in self.params.iter().enumerate() {
                named.push((
                    format!("{name}.{slot}"),
                    self.state[slot_index][param_index].shallow_clone(),
                ));
            }
        }
        named
    }

    /// Restores state saved by [`state_tensors`](Self::state_tensors) and the update count.
    pub fn load_state(
        &mut self,
        lookup: impl Fn(&str) -> Option<Tensor>,
        updates: i64,
    ) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        for (slot_index, slot) in self.config.kind.slots().iter().enumerate() {
            for (param_index, (name, _)) in self.params.iter().enumerate() {
                let key = format!("{name}.{slot}");
                let saved = lookup(&key).ok_or_else(|| {
                    Error::invalid(format!("checkpoint has no optimizer state '{key}'"))
                })?;
                let target = &mut self.state[slot_index][param_index];
                if saved.size() != target.size() {
                    return Err(Error::shape(format!(
                        "optimizer state '{key}' has shape {:?}, expected {:?}",
                        saved.size(),
                        target.size()
                    )));
                }
                target.f_copy_(&saved)?;
            }
        }
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// Minimizes ½‖w − 3‖² from w = 0 and returns w after `steps` updates.
    fn descend(config: OptimizerConfig, steps: usize) -> Vec<f64> {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        let mut optimizer = Optimizer::new(&vs, config).unwrap();
        let mut trace = Vec::new();
        for step in 0..steps {
            optimizer.zero_grad().unwrap();
            let loss = (&w - 3.0).square().sum(Kind::Float) * 0.5;
            loss.backward();
            optimizer.clip_grad_norm().unwrap();
            optimizer.step(config.lr_at(step as i64)).unwrap();
            trace.push(w.double_value(&[0]));
        }
        trace
    }

    fn close(actual: &[f64], expected: &[f64]) {
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{actual:?} vs {expected:?}");
        }
    }

    // Expected values worked by hand from torch.optim's update rules; gradient g = w − 3.

    #[test]
    fn sgd_plain_and_with_momentum() {
        let sgd = |momentum, nesterov| OptimizerConfig {
            kind: OptimizerKind::Sgd { momentum, nesterov },
            lr: 0.1,
            ..Default::default()
        };
        // w1 = 0 + 0.1·3 = 0.3; w2 = 0.3 + 0.1·2.7 = 0.57
        close(&descend(sgd(0.0, false), 2), &[0.3, 0.57]);
        // buf1 = −3 → w1 = 0.3; buf2 = 0.9·(−3) − 2.7 = −5.4 → w2 = 0.84
        close(&descend(sgd(0.9, false), 2), &[0.3, 0.84]);
        // nesterov: step1 g + 0.9·buf = −5.7 → w1 = 0.57
        close(&descend(sgd(0.9, true), 1), &[0.57]);
    }

    #[test]
    fn adagrad_matches_torch() {
        // sum1 = 9, w1 = 0.05·3/3 = 0.05; g2 = −2.95, sum2 = 9 + 8.7025, w2 = 0.05 + 0.05·2.95/√17.7025
        let expected2 = 0.05 + 0.05 * 2.95 / 17.7025f64.sqrt();
        close(&descend(OptimizerConfig::default(), 2), &[0.05, expected2]);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        for kind in [
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        ] {
            let config = OptimizerConfig {
                kind,
                lr: 0.01,
                ..Default::default()
            };
            close(&descend(config, 1), &[0.01]);
        }
    }

    #[test]
    fn clipping_bounds_the_update() {
        // ‖g‖ = 3√2 clipped to 1 → each component 1/√2
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            lr: 1.0,
            max_grad_norm: Some(1.0),
            ..Default::default()
        };
        close(&descend(config, 1), &[1.0 / 2f64.sqrt()]);
    }

    #[test]
    fn schedules_and_warmup() {
        let base = OptimizerConfig {
            lr: 1.0,
            ..Default::default()
        };
        let step = OptimizerConfig {
            schedule: Schedule::Step {
                every: 10,
                gamma: 0.5,
            },
            ..base
        };
        assert_eq!(step.lr_at(9), 1.0);
        assert_eq!(step.lr_at(10), 0.5);
        let cosine = OptimizerConfig {
            schedule: Schedule::Cosine {
                total_steps: 100,
                min_lr: 0.0,
            },
            ..base
        };
        assert!((cosine.lr_at(50) - 0.5).abs() < 1e-12);
        assert!(cosine.lr_at(100).abs() < 1e-12);
        let warm = OptimizerConfig {
            warmup_steps: 3,
            ..base
        };
        assert_eq!(warm.lr_at(0), 0.25);
        assert_eq!(warm.lr_at(3), 1.0);
    }

    #[test]
    fn invalid_values_name_themselves() {
        let bad = OptimizerConfig {
            lr: -1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("-1"));
        let bad = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 1.5,
                nesterov: false,
            },
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("1.5"));
    }

    #[test]
    fn state_round_trips() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[2]);
        let mut optimizer = Optimizer::new(&vs, OptimizerConfig::default()).unwrap();
        let loss = (&w - 3.0).square().sum(Kind::Float);
        loss.backward();
        optimizer.step(0.05).unwrap();
        let saved = optimizer.state_tensors();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].0, "w.sum");
        let mut fresh = Optimizer::new(&vs, OptimizerConfig::default()).unwrap();
        fresh
            .load_state(
                |name| saved.iter().find(|(n, _)| n == name).map(|(_, t)| t.copy()),
                1,
            )
            .unwrap();
        assert!(fresh.state_tensors()[0].1.equal(&saved[0].1));
        assert_eq!(fresh.updates(), 1);
    }

    #[test]
    fn each_parameter_steps_at_its_groups_rate() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = vs.root().zeros("head", &[1]);
        let body = vs.root().zeros("body", &[1]);
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            lr: 0.1,
            ..Default::default()
        };
        let params = vec![
            ("head".to_owned(), head.shallow_clone(), 1.0),
            ("body".to_owned(), body.shallow_clone(), 0.1),
        ];
        let mut optimizer = Optimizer::over_scaled(params, config).unwrap();
        let loss = (&head - 3.0).square().sum(Kind::Float) * 0.5
            + (&body - 3.0).square().sum(Kind::Float) * 0.5;
        loss.backward();
        optimizer.step(0.1).unwrap();
        // g = −3 for both: the head moves by 0.1·3, the body by a tenth of that.
        close(
            &[head.double_value(&[0]), body.double_value(&[0])],
            &[0.3, 0.03],
        );
        let bad = vec![("w".to_owned(), head.shallow_clone(), 0.0)];
        let err = Optimizer::over_scaled(bad, config).err().unwrap();
        assert!(err.to_string().contains("'w'"), "{err}");
    }
}
