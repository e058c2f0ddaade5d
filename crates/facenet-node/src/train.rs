//! Training on the model's own worker thread: the optimizer state lives beside the
//! weights, and each step's batch crosses the boundary once, as one pixel buffer.

use crate::error::{coded, invalid, to_js};
use crate::error::{OrNapiCode, Result};
use crate::mining::{
    parse_miner, stats_to_js, triplets_from, BindingMineOptions, BindingMiningStats,
};
use crate::options::{
    BindingLossKind, BindingOptimizer, BindingPrecision, BindingReducer, BindingSchedule,
};
use crate::pixels::Pixels;
use crate::worker::{reject, Deferred, Worker};
use crate::BindingModel;
use facenet::distributed::{ProcessGroup, Rendezvous};
use facenet::freeze::{Freeze, LrGroup};
use facenet::loss::margin::MarginLoss;
use facenet::loss::objective::{LossPhase, LossSchedule};
use facenet::loss::TripletLoss;
use facenet::mining::Triplets;
use facenet::optim::{OptimizerConfig, OptimizerKind, Schedule};
use facenet::train::{StepStats, TrainConfig, TrainState};
use facenet::FaceNet;
use napi::bindgen_prelude::{Either, Float32Array, Int32Array, Object, Uint8Array};
use napi::Env;
use napi_derive::napi;
use tch::Tensor;

#[napi(object)]
pub struct BindingOptimizerOptions {
    pub name: BindingOptimizer,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub schedule: BindingSchedule,
    pub step_every: i64,
    pub gamma: f64,
    pub total_steps: i64,
    pub min_lr: f64,
    pub warmup_steps: i64,
    /// 0 disables clipping.
    pub max_grad_norm: f64,
}

#[napi(object)]
pub struct BindingTrainOptions {
    pub optimizer: BindingOptimizerOptions,
    pub mining: BindingMineOptions,
    pub reducer: BindingReducer,
    pub normalize: bool,
    /// Checked by the TS layer: a non-negative integer.
    pub seed: i64,
    /// fp32 when absent; bf16 autocasts the forward pass.
    pub precision: Option<BindingPrecision>,
    /// The triplet loss alone when absent.
    pub phases: Option<Vec<BindingLossPhase>>,
    /// Identities in the data (rows of the class head); labels are class indices then.
    pub classes: Option<i64>,
    /// Return each step's `distributions` (for histograms); off when absent.
    pub record_distributions: Option<bool>,
    /// Layer-name prefixes to freeze.
    pub freeze_prefixes: Option<Vec<String>>,
    /// Freeze every block but the last N.
    pub train_last_blocks: Option<u32>,
    /// Per-group learning rates, the first matching group winning.
    pub lr_groups: Option<Vec<BindingLrGroup>>,
    /// Data-parallel training: this rank joins its group before the promise resolves.
    pub distributed: Option<BindingDistributed>,
}

/// One rank's place in a data-parallel run (torchrun's variables), checked by the TS layer.
#[napi(object)]
pub struct BindingDistributed {
    pub master_addr: String,
    pub master_port: u32,
    pub rank: u32,
    pub world_size: u32,
    pub timeout_ms: f64,
    pub interface: Option<String>,
}

fn parse_distributed(d: &BindingDistributed) -> Result<Rendezvous> {
    let rendezvous = Rendezvous {
        master_addr: d.master_addr.clone(),
        master_port: u16::try_from(d.master_port).map_err(|_| {
            invalid(format!(
                "masterPort must be in 1..65535, got {}",
                d.master_port
            ))
        })?,
        rank: i64::from(d.rank),
        world_size: i64::from(d.world_size),
        timeout: std::time::Duration::from_millis(d.timeout_ms.max(0.0) as u64),
        interface: d.interface.clone(),
    };
    rendezvous.validate().map_err(to_js)?;
    Ok(rendezvous)
}

/// Parameters under `prefixes` learn at `lr`.
#[napi(object)]
pub struct BindingLrGroup {
    pub prefixes: Vec<String>,
    pub lr: f64,
}

/// One phase of the loss schedule, its fields resolved by the TS layer.
#[napi(object)]
pub struct BindingLossPhase {
    pub from_step: i64,
    /// The classification loss, or `triplet` for none.
    pub loss: BindingLossKind,
    pub triplet_weight: f64,
    pub margin: f64,
    pub scale: f64,
    pub easy_margin: bool,
    pub center_weight: f64,
}

#[napi(object)]
pub struct BindingStepStats {
    pub step: f64,
    pub loss: f64,
    pub triplet_loss: f64,
    pub class_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub mining: BindingMiningStats,
    pub mean_pairwise_distance: f64,
    pub updated: bool,
    /// Present when training was configured with `recordDistributions`.
    pub distributions: Option<BindingStepDistributions>,
    /// Time this step spent in collectives (data-parallel training; 0 otherwise).
    pub communication_ms: f64,
}

/// Per-example values of one step, for histograms.
#[napi(object)]
pub struct BindingStepDistributions {
    /// L2 norm of each embedding as the network outputs it.
    pub embedding_norms: Float32Array,
    /// d(a,p) and d(a,n) of each triplet the step trained on.
    pub positive_distances: Float32Array,
    pub negative_distances: Float32Array,
}

fn parse_optimizer(o: &BindingOptimizerOptions) -> Result<OptimizerConfig> {
    let kind = match o.name {
        BindingOptimizer::Sgd => OptimizerKind::Sgd {
            momentum: o.momentum,
            nesterov: o.nesterov,
        },
        BindingOptimizer::Adagrad => OptimizerKind::Adagrad { eps: o.eps },
        BindingOptimizer::Adam => OptimizerKind::Adam {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
        },
        BindingOptimizer::Adamw => OptimizerKind::AdamW {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
        },
    };
    let schedule = match o.schedule {
        BindingSchedule::Constant => Schedule::Constant,
        BindingSchedule::Step => Schedule::Step {
            every: o.step_every,
            gamma: o.gamma,
        },
        BindingSchedule::Cosine => Schedule::Cosine {
            total_steps: o.total_steps,
            min_lr: o.min_lr,
        },
    };
    let config = OptimizerConfig {
        kind,
        lr: o.lr,
        weight_decay: o.weight_decay,
        schedule,
        warmup_steps: o.warmup_steps,
        max_grad_norm: (o.max_grad_norm > 0.0).then_some(o.max_grad_norm),
    };
    config.validate().map_err(to_js)?;
    Ok(config)
}

fn parse_phase(p: &BindingLossPhase) -> LossPhase {
    let class_loss = match p.loss {
        BindingLossKind::Triplet => None,
        BindingLossKind::Arcface => Some(MarginLoss::ArcFace {
            margin: p.margin,
            scale: p.scale,
            easy_margin: p.easy_margin,
        }),
        BindingLossKind::Cosface => Some(MarginLoss::CosFace {
            margin: p.margin,
            scale: p.scale,
        }),
        BindingLossKind::SoftmaxCenter => Some(MarginLoss::SoftmaxCenter {
            center_weight: p.center_weight,
        }),
    };
    LossPhase {
        from_step: p.from_step,
        triplet_weight: p.triplet_weight,
        class_loss,
    }
}

fn parse_train_options(o: &BindingTrainOptions) -> Result<TrainConfig> {
    let miner = parse_miner(&o.mining);
    let objective = match &o.phases {
        Some(phases) => {
            LossSchedule::new(phases.iter().map(parse_phase).collect()).map_err(to_js)?
        }
        None => LossSchedule::default(),
    };
    Ok(TrainConfig {
        optimizer: parse_optimizer(&o.optimizer)?,
        loss: TripletLoss {
            margin: miner.margin(),
            reducer: o.reducer.into(),
            normalize: o.normalize,
            distance: o.mining.distance.into(),
        },
        miner,
        objective,
        classes: o.classes.unwrap_or(0),
        seed: o.seed as u64,
        precision: o.precision.map_or_else(Default::default, Into::into),
        record_distributions: o.record_distributions.unwrap_or(false),
        freeze: Freeze {
            prefixes: o.freeze_prefixes.clone().unwrap_or_default(),
            train_last_blocks: o.train_last_blocks.map(|n| n as usize),
        },
        lr_groups: o
            .lr_groups
            .iter()
            .flatten()
            .map(|g| LrGroup {
                prefixes: g.prefixes.clone(),
                lr: g.lr,
            })
            .collect(),
    })
}

pub(crate) fn step_to_js(stats: StepStats) -> BindingStepStats {
    BindingStepStats {
        step: stats.step as f64,
        loss: stats.loss,
        triplet_loss: stats.triplet_loss,
        class_loss: stats.class_loss,
        lr: stats.lr,
        grad_norm: stats.grad_norm,
        mining: stats_to_js(&stats.mining),
        mean_pairwise_distance: stats.mean_pairwise_distance,
        updated: stats.updated,
        communication_ms: stats.communication_ms,
        distributions: stats.distributions.map(|d| BindingStepDistributions {
            embedding_norms: d.embedding_norms.into(),
            positive_distances: d.positive_distances.into(),
            negative_distances: d.negative_distances.into(),
        }),
    }
}

#[napi]
impl BindingModel {
    /// Sets up (or replaces) the optimizer and loss for training this model.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn configure_training<'env>(
        &self,
        env: &'env Env,
        options: BindingTrainOptions,
    ) -> Result<Object<'env>> {
        let config = parse_train_options(&options)?;
        let rendezvous = options
            .distributed
            .as_ref()
            .map(parse_distributed)
            .transpose()?;
        let (deferred, promise): (Deferred<()>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            move |state| {
                let model = state.model.as_ref().ok_or_else(crate::error::disposed)?;
                // The previous training state (and its group) goes first, so a new group
                // can form on the same port.
                state.training = None;
                let mut training = TrainState::new(model, config).map_err(to_js)?;
                if let Some(rendezvous) = rendezvous {
                    // Blocks this model's worker (not libuv's pool) until every rank joined.
                    let group = ProcessGroup::join(&rendezvous).map_err(to_js)?;
                    training.join_group(model, group).map_err(to_js)?;
                }
                state.training = Some(training);
                Ok(())
            },
            |_env, ()| Ok(()),
        );
        Ok(promise)
    }

    /// One optimizer step on N×H×W×3 pixels with their labels. `triplets` (3×T indices
    /// into the batch: anchors, positives, negatives) replaces online mining.
    #[napi(ts_return_type = "Promise<BindingStepStats>")]
    #[allow(clippy::too_many_arguments)]
    pub fn train_step<'env>(
        &self,
        env: &'env Env,
        pixels: Either<Uint8Array, Float32Array>,
        labels: Int32Array,
        count: u32,
        height: u32,
        width: u32,
        triplets: Option<Int32Array>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<BindingStepStats>, Object) =
            env.create_deferred().or_code()?;
        let prepared = (|| -> Result<(Pixels, Tensor, Option<Triplets>)> {
            let images = Pixels::new(pixels, count, height, width)?;
            if labels.len() != count as usize {
                return Err(coded(
                    "ERR_SHAPE",
                    format!("{} labels for {count} images", labels.len()),
                ));
            }
            let triplets = triplets.as_deref().map(triplets_from).transpose()?;
            Ok((images, label_tensor(&labels), triplets))
        })();
        run_step(
            &self.worker,
            deferred,
            prepared,
            |training, model, images, labels, triplets| {
                training.step(model, images, labels, triplets)
            },
        );
        Ok(promise)
    }

    /// A harmonic step (FaceNet §7): `v1` holds N×embeddingDim embeddings of the same
    /// pixels by the old, frozen model; triplets mix both versions' embeddings.
    #[napi(ts_return_type = "Promise<BindingStepStats>")]
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_harmonic<'env>(
        &self,
        env: &'env Env,
        pixels: Either<Uint8Array, Float32Array>,
        labels: Int32Array,
        count: u32,
        height: u32,
        width: u32,
        v1: Float32Array,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<BindingStepStats>, Object) =
            env.create_deferred().or_code()?;
        let prepared = (|| -> Result<(Pixels, Tensor, Tensor)> {
            let images = Pixels::new(pixels, count, height, width)?;
            if labels.len() != count as usize
                || count == 0
                || !v1.len().is_multiple_of(count as usize)
            {
                return Err(coded(
                    "ERR_SHAPE",
                    format!(
                        "{} labels and {} v1 values for {count} images",
                        labels.len(),
                        v1.len()
                    ),
                ));
            }
            let dim = (v1.len() / count as usize) as i64;
            let v1 = Tensor::from_slice(&v1).view([i64::from(count), dim]);
            Ok((images, label_tensor(&labels), v1))
        })();
        run_step(
            &self.worker,
            deferred,
            prepared,
            |training, model, images, labels, v1| {
                training.harmonic_step(model, images, labels, &v1)
            },
        );
        Ok(promise)
    }

    /// Data-parallel training: the largest `value` that any rank passes (every rank gets
    /// the same answer), e.g. so that all ranks stop after the same step when one of them
    /// is asked to. Without a group, `value` itself.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn max_across_ranks<'env>(&self, env: &'env Env, value: u32) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<u32>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            move |worker| {
                let training = worker.training.as_ref().ok_or_else(not_configured)?;
                let Some(group) = training.process_group() else {
                    return Ok(value);
                };
                let flag = Tensor::from_slice(&[i64::from(value)]);
                group
                    .all_reduce_max_(std::slice::from_ref(&flag))
                    .map_err(to_js)?;
                Ok(flag.int64_value(&[]) as u32)
            },
            |_env, value| Ok(value),
        );
        Ok(promise)
    }

    /// Writes weights, optimizer state, step counters and `state` (the trainer's JSON)
    /// to `path` atomically.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save_checkpoint<'env>(
        &self,
        env: &'env Env,
        path: String,
        state: String,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<()>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            move |worker| {
                let model = worker.model.as_ref().ok_or_else(crate::error::disposed)?;
                let training = worker.training.as_ref().ok_or_else(not_configured)?;
                facenet::checkpoint::save(model, training, &state, std::path::Path::new(&path))
                    .map_err(to_js)
            },
            |_env, ()| Ok(()),
        );
        Ok(promise)
    }

    /// Restores a checkpoint into this model and its training state; resolves to the
    /// trainer's JSON state saved with it.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn load_checkpoint<'env>(&self, env: &'env Env, path: String) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<String>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            move |worker| {
                let model = worker.model.as_ref().ok_or_else(crate::error::disposed)?;
                let training = worker.training.as_mut().ok_or_else(not_configured)?;
                facenet::checkpoint::load(model, training, std::path::Path::new(&path))
                    .map_err(to_js)
            },
            |_env, state| Ok(state),
        );
        Ok(promise)
    }
}

/// Int32 labels from JS as the int64 tensor the core indexes with.
fn label_tensor(labels: &Int32Array) -> Tensor {
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Tensor::from_slice(&labels)
}

/// Runs one training step on the worker once its inputs are `prepared` (or rejects with
/// why they could not be): the pixels' first copy is the network input, and nothing the
/// step returns views them.
fn run_step<X, F>(
    worker: &std::sync::Arc<Worker>,
    deferred: Deferred<BindingStepStats>,
    prepared: Result<(Pixels, Tensor, X)>,
    step: F,
) where
    X: Send + 'static,
    F: FnOnce(&mut TrainState, &FaceNet, &Tensor, &Tensor, X) -> facenet::Result<StepStats>
        + Send
        + 'static,
{
    match prepared {
        Ok((images, labels, extra)) => worker.run(
            deferred,
            move |state| {
                images.with_tensor(|images| {
                    let model = state.model.as_ref().ok_or_else(crate::error::disposed)?;
                    let training = state.training.as_mut().ok_or_else(not_configured)?;
                    step(training, model, images, &labels, extra)
                        .map(step_to_js)
                        .map_err(to_js)
                })
            },
            |_env, stats| Ok(stats),
        ),
        Err(error) => reject(deferred, error),
    }
}

pub(crate) fn not_configured() -> crate::error::Error {
    coded(
        "ERR_INVALID_ARGUMENT",
        "training is not configured; call configureTraining() first",
    )
}
