//! One training step: forward a batch in training mode, choose triplets (mined online
//! inside the batch, or given by the caller for the notebook's per-epoch lists), compute
//! the step's objective (the triplet loss, a classification loss over the class head, or
//! both), backpropagate and update. Epochs, data and checkpoints are driven from outside;
//! this module holds exactly what a step needs to be resumable.

use crate::distance::row_distance;
use crate::distributed::{all_reduce_buckets_, ProcessGroup, BUCKET_BYTES};
use crate::error::{Error, Result};
use crate::foreach;
use crate::freeze::{self, Freeze, LrGroup};
use crate::loss::margin::{check_labels, margin_loss_in_range};
use crate::loss::objective::{ClassHead, LossSchedule};
use crate::loss::{triplet_loss_with_count, TripletLoss};
use crate::mining::{mine, Miner, MiningStats, Triplets};
use crate::model::{check_image_batch, FaceNet};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::precision::{with_precision, Precision};
use crate::preprocess::to_network_input;
use crate::rng::SplitMix64;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub optimizer: OptimizerConfig,
    /// How triplets are scored, in the phases that use them.
    pub loss: TripletLoss,
    pub miner: Miner,
    /// What each step minimizes; the triplet loss alone by default.
    pub objective: LossSchedule,
    /// Rows of the class head (the identities of the data) when a phase classifies; labels
    /// must then lie in 0..classes.
    pub classes: i64,
    /// Seeds dropout and random miner choices, mixed with the step number, so that a run
    /// resumed from a checkpoint repeats the uninterrupted run exactly.
    pub seed: u64,
    /// Arithmetic of the forward pass; the loss, mining and update stay float32.
    pub precision: Precision,
    /// Also return each step's per-example values ([`StepDistributions`]) for histograms.
    /// Off by default: they cost one extra device-to-host copy per step.
    pub record_distributions: bool,
    /// Layers a fine-tune leaves as they are: no gradient, no optimizer state, and their
    /// batch-norm statistics held.
    pub freeze: Freeze,
    /// Per-group learning rates (e.g. the backbone below the head).
    pub lr_groups: Vec<LrGroup>,
}

/// Per-example values of one step, read back only when [`TrainConfig::record_distributions`]
/// asks for them (TensorBoard's histograms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepDistributions {
    /// The L2 norm of each embedding as the network outputs it (before the loss's own
    /// normalization): 1 for the archs that end in an L2 layer, spread out for raw descriptors.
    pub embedding_norms: Vec<f32>,
    /// d(a,p) and d(a,n) of each triplet the step trained on, as the loss measures them.
    pub positive_distances: Vec<f32>,
    pub negative_distances: Vec<f32>,
}

/// What one step did, for logs and guards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// The step this was (0-based).
    pub step: i64,
    pub loss: f64,
    /// The parts of `loss` (before weighting): 0 where the step's phase lacks one.
    pub triplet_loss: f64,
    pub class_loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub mining: MiningStats,
    /// Mean squared L2 distance between the batch's embeddings; near 0 means collapse.
    pub mean_pairwise_distance: f64,
    /// False when no triplet was left to learn from and the weights were not touched.
    pub updated: bool,
    /// Present when the config's `record_distributions` is set.
    pub distributions: Option<StepDistributions>,
    /// Wall time this rank spent in collectives (gathering the global batch, summing the
    /// gradients), waiting for slower ranks included; 0 in one process.
    pub communication_ms: f64,
}

pub struct TrainState {
    config: TrainConfig,
    optimizer: Optimizer,
    head: Option<ClassHead>,
    /// Frozen layers' batch-norm statistics (live tensor, value to hold): training-mode
    /// forwards move them, and each step puts them back.
    frozen_buffers: Vec<(Tensor, Tensor)>,
    /// Completed steps, skipped ones included; the schedule and the seeds read it.
    steps: i64,
    /// Data-parallel training: the group this rank trains with.
    group: Option<ProcessGroup>,
}

/// Decorrelates (seed, step) pairs into independent seeds with SplitMix64's mixer.
pub fn mix_seed(seed: u64, step: i64) -> u64 {
    SplitMix64::mix(seed ^ (step as u64).wrapping_mul(SplitMix64::GAMMA))
}

impl TrainState {
    pub fn new(model: &FaceNet, config: TrainConfig) -> Result<Self> {
        let head = ClassHead::for_schedule(
            &config.objective,
            config.classes,
            model.config().embedding_dim,
            model.device(),
            (mix_seed(config.seed, -1) >> 1) as i64,
        )?;
        let plan = freeze::plan(
            model,
            &config.freeze,
            &config.lr_groups,
            config.optimizer.lr,
        )?;
        let mut params = plan.trainable;
        params.extend(
            head.iter()
                .flat_map(ClassHead::parameters)
                .map(|(name, tensor)| (name, tensor, 1.0)),
        );
        let optimizer = Optimizer::over_scaled(params, config.optimizer)?;
        let frozen_buffers = snapshot(plan.frozen_buffers.into_iter().map(|(_, t)| t))?;
        Ok(Self {
            config,
            optimizer,
            head,
            frozen_buffers,
            steps: 0,
            group: None,
        })
    }

    /// Trains data-parallel from now on, as this rank of `group`: the weights, batch-norm
    /// statistics and class head are overwritten with rank 0's (as DDP's constructor
    /// does), so every rank starts from the same model. Each step then mines over the
    /// global batch and sums the gradients across ranks before the (identical) update.
    pub fn join_group(&mut self, model: &FaceNet, group: ProcessGroup) -> Result<()> {
        if model.device() != Device::Cpu {
            return Err(Error::DeviceUnavailable(format!(
                "distributed training runs on CPU tensors with Gloo in this version; the model is on {:?} (NCCL, for CUDA, is not built in)",
                model.device()
            )));
        }
        let mut tensors: Vec<(String, Tensor)> =
            model.var_store().variables().into_iter().collect();
        tensors.extend(self.head.iter().flat_map(ClassHead::parameters));
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = tensors.into_iter().map(|(_, t)| t).collect();
        {
            let _no_grad = tch::no_grad_guard();
            group.broadcast_(&tensors, 0)?;
        }
        // Rank 0's frozen statistics are the ones to hold.
        self.frozen_buffers = snapshot(
            self.frozen_buffers
                .iter()
                .map(|(live, _)| live.shallow_clone()),
        )?;
        self.group = Some(group);
        Ok(())
    }

    /// The group this rank trains with, when training data-parallel.
    pub fn process_group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// Puts the frozen layers' batch-norm statistics back to their held values.
    fn hold_frozen_buffers(&self) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        for (live, held) in &self.frozen_buffers {
            live.shallow_clone().f_copy_(held)?;
        }
        Ok(())
    }

    /// The classification losses' class weights (and centres), when a phase uses them.
    pub fn class_head(&self) -> Option<&ClassHead> {
        self.head.as_ref()
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// Completed steps.
    pub fn step_count(&self) -> i64 {
        self.steps
    }

    /// Sets the step counter and optimizer state from a checkpoint.
    pub fn restore(
        &mut self,
        steps: i64,
        updates: i64,
        lookup: impl Fn(&str) -> Option<Tensor>,
    ) -> Result<()> {
        self.optimizer.load_state(lookup, updates)?;
        self.steps = steps;
        // The checkpoint's weights were just loaded: its frozen statistics are the ones to hold.
        self.frozen_buffers = snapshot(
            self.frozen_buffers
                .iter()
                .map(|(live, _)| live.shallow_clone()),
        )?;
        Ok(())
    }

    /// Trains on one batch of N×H×W×3 images (uint8 or float32 0..255, CPU) with their
    /// integer identity labels. `triplets`, when given, index into this batch and replace
    /// online mining. Nothing is updated when the loss or a gradient is not finite: the
    /// error names the step, and the weights stay as they were before it.
    pub fn step(
        &mut self,
        model: &FaceNet,
        images: &Tensor,
        labels: &Tensor,
        triplets: Option<Triplets>,
    ) -> Result<StepStats> {
        self.step_with(model, images, labels, triplets, None)
    }

    /// A step of harmonic training (FaceNet §7): `v1` holds the same images' embeddings by
    /// the old, frozen model (N×D). Triplets are mined over the 2N embeddings of both
    /// versions, with labels shared, and every triplet with at least one member from the
    /// model being trained is kept (the ones wholly from v1 carry no gradient), so that
    /// the new embeddings are pulled towards the old ones of the same identity and pushed
    /// from the old ones of others.
    pub fn harmonic_step(
        &mut self,
        model: &FaceNet,
        images: &Tensor,
        labels: &Tensor,
        v1: &Tensor,
    ) -> Result<StepStats> {
        self.step_with(model, images, labels, None, Some(v1))
    }

    fn step_with(
        &mut self,
        model: &FaceNet,
        images: &Tensor,
        labels: &Tensor,
        triplets: Option<Triplets>,
        v1: Option<&Tensor>,
    ) -> Result<StepStats> {
        check_image_batch(images, model.input_size())?;
        let n = images.size()[0];
        if labels.size() != [n] {
            return Err(Error::shape(format!(
                "labels must hold one entry per image ({n}), got shape {:?}",
                labels.size()
            )));
        }
        if n < 2 {
            return Err(Error::shape(format!(
                "a training batch needs at least 2 images, got {n}"
            )));
        }
        let step = self.steps;
        let phase = *self.config.objective.at(step);
        if self.group.is_some() && (triplets.is_some() || v1.is_some()) {
            return Err(Error::invalid(
                "distributed training mines its triplets online over the global batch; given triplet lists and harmonic steps train in one process",
            ));
        }
        if triplets.is_some() && !phase.uses_triplets() {
            return Err(Error::invalid(format!(
                "triplets were given for step {step}, whose loss phase does not use the triplet loss"
            )));
        }
        if v1.is_some() && (triplets.is_some() || phase.class_loss.is_some()) {
            return Err(Error::invalid(format!(
                "harmonic training mines its own triplets with the triplet loss alone; step {step} was given triplets or has a classification loss"
            )));
        }
        let dim = model.config().embedding_dim;
        if let Some(v1) = v1 {
            if v1.size() != [n, dim] {
                return Err(Error::shape(format!(
                    "the v1 embeddings must be {n}×{dim} (one per image, the trained model's dimension), got shape {:?}",
                    v1.size()
                )));
            }
        }
        let step_seed = mix_seed(self.config.seed, step);
        // Dropout draws from libtorch's global generator.
        tch::manual_seed((step_seed >> 1) as i64);

        if let (Some(_), Some(head)) = (&phase.class_loss, &self.head) {
            // On the CPU labels, so the device never syncs for it.
            check_labels(labels, head.classes())?;
        }
        let device = model.device();
        let input = to_network_input(images, device, model.config().normalization)?;
        let labels = labels.f_to_device(device)?.f_to_kind(Kind::Int64)?;
        // Under bf16 autocast the head's output may come back in bf16; mining and the loss
        // compare small distance differences, so they run on float32 copies.
        let embeddings = with_precision(device, self.config.precision, || {
            model.forward_t(&input, true)
        })?;
        let embeddings = model.float32_embeddings(embeddings, self.config.precision)?;
        // Data-parallel: mining and the loss see every rank's rows (identical on every
        // rank), and the checks below fail on every rank at once.
        let mut communication = std::time::Duration::ZERO;
        let (embeddings, labels) = match &self.group {
            Some(group) => {
                let started = std::time::Instant::now();
                let global = global_batch(group, &embeddings, &labels)?;
                communication += started.elapsed();
                global
            }
            None => (embeddings, labels),
        };
        let n = embeddings.size()[0];
        self.hold_frozen_buffers()?;
        if embeddings.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Err(Error::NonFinite(format!(
                "the embeddings are NaN or infinite at step {step} (check the input pixels); the weights were not updated"
            )));
        }

        // Harmonic steps score triplets over both versions' embeddings: this model's first,
        // then v1's (constants), rows i and n + i being the same image.
        let (embeddings, labels) = match v1 {
            Some(v1) => {
                let v1 = v1.f_to_device(device)?.f_to_kind(Kind::Float)?.f_detach()?;
                (
                    Tensor::f_cat(&[&embeddings, &v1], 0)?,
                    Tensor::f_cat(&[&labels, &labels], 0)?,
                )
            }
            None => (embeddings, labels),
        };
        let (triplets, mining) = match triplets {
            None if v1.is_some() => {
                let (mined, _) = mine(
                    &embeddings.detach(),
                    &labels,
                    &self.config.miner,
                    self.config.loss.distance,
                    step_seed,
                )?;
                let kept = harmonic_triplets(mined, n)?;
                let stats = describe_given(&embeddings.detach(), &kept, &self.config.loss)?;
                (kept, stats)
            }
            None if !phase.uses_triplets() => (Triplets::empty(device), MiningStats::default()),
            Some(given) => {
                check_triplets(&given, n)?;
                let given = on_device(given, device)?;
                let stats = describe_given(&embeddings.detach(), &given, &self.config.loss)?;
                (given, stats)
            }
            None => mine(
                &embeddings.detach(),
                &labels,
                &self.config.miner,
                self.config.loss.distance,
                step_seed,
            )?,
        };
        // This model's rows only: the collapse guard watches the network being trained.
        let mean_pairwise_distance =
            mean_pairwise_squared_distance(&embeddings.detach().f_narrow(0, 0, n)?)?;
        let distributions = if self.config.record_distributions {
            Some(step_distributions(
                &embeddings.detach(),
                &triplets,
                &self.config.loss,
            )?)
        } else {
            None
        };
        let lr = self.config.optimizer.lr_at(step);

        if triplets.is_empty() && phase.class_loss.is_none() {
            // Nothing to learn from (e.g. no positive pairs): count the step, keep the weights.
            self.steps += 1;
            return Ok(StepStats {
                step,
                lr,
                mining,
                mean_pairwise_distance,
                distributions,
                communication_ms: communication.as_secs_f64() * 1e3,
                ..Default::default()
            });
        }

        let triplet_part = if triplets.is_empty() {
            None
        } else {
            Some(triplet_loss_with_count(&embeddings, &triplets, &self.config.loss)?.loss)
        };
        let class_part = match (&phase.class_loss, &self.head) {
            (Some(class_loss), Some(head)) => Some(margin_loss_in_range(
                class_loss,
                &embeddings,
                &labels,
                head.weights(),
                head.centers(),
            )?),
            (Some(_), None) => {
                return Err(Error::invalid(
                    "a classification phase needs a class head; it is built from the schedule",
                ))
            }
            (None, _) => None,
        };
        let weight = phase.triplet_weight;
        let (loss, loss_value, triplet_value, class_value) = match (triplet_part, class_part) {
            // The weight 1 of the paper's objective is skipped so that its runs stay bit-identical.
            (Some(t), None) if weight == 1.0 => {
                let [v] = read_scalars([&t])?;
                (t, v, v, 0.0)
            }
            (Some(t), None) => {
                let loss = t.f_mul_scalar(weight)?;
                let [l, tv] = read_scalars([&loss, &t])?;
                (loss, l, tv, 0.0)
            }
            (None, Some(c)) => {
                let [v] = read_scalars([&c])?;
                (c, v, 0.0, v)
            }
            (Some(t), Some(c)) => {
                let loss = c.f_add(&t.f_mul_scalar(weight)?)?;
                let [l, tv, cv] = read_scalars([&loss, &t, &c])?;
                (loss, l, tv, cv)
            }
            (None, None) => unreachable!("checked above"),
        };
        if !loss_value.is_finite() {
            return Err(Error::NonFinite(format!(
                "the loss is {loss_value} at step {step}; the weights were not updated"
            )));
        }
        self.optimizer.zero_grad()?;
        loss.f_backward()?;
        if let Some(group) = &self.group {
            let started = std::time::Instant::now();
            let head: Vec<Tensor> = self
                .head
                .iter()
                .flat_map(ClassHead::parameters)
                .map(|(_, t)| t.grad())
                .filter(Tensor::defined)
                .collect();
            reduce_gradients(group, &self.optimizer.gradients(), &head)?;
            communication += started.elapsed();
        }
        let grad_norm = self.optimizer.clip_grad_norm()?;
        if !grad_norm.is_finite() {
            self.optimizer.zero_grad()?;
            return Err(Error::NonFinite(format!(
                "the gradient norm is {grad_norm} at step {step}; the weights were not updated"
            )));
        }
        self.optimizer.step(lr)?;
        self.steps += 1;
        if let Some(name) = first_non_finite_weight(model)? {
            return Err(Error::NonFinite(format!(
                "weight '{name}' became NaN or infinite at step {step}"
            )));
        }
        Ok(StepStats {
            step,
            loss: loss_value,
            triplet_loss: triplet_value,
            class_loss: class_value,
            lr,
            grad_norm,
            mining,
            mean_pairwise_distance,
            updated: true,
            distributions,
            communication_ms: communication.as_secs_f64() * 1e3,
        })
    }
}

/// Every rank's embeddings and labels of this step, in rank order, this rank's rows being
/// its live (differentiable) `embeddings` and the others constants: backpropagating a loss
/// of the result gives this rank's share of the global gradient, as
/// pytorch-metric-learning's `DistributedLossWrapper` does. The ranks' batches may differ
/// in size (a P×K batch holds fewer than K images of a small identity): c10d's all-gather
/// takes one shape, so each rank pads to the largest and the padding is cut off.
pub fn global_batch(
    group: &ProcessGroup,
    embeddings: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let n = embeddings.size()[0];
    let sizes = Vec::<i64>::try_from(&group.all_gather(&Tensor::from_slice(&[n]))?)?;
    let most = sizes.iter().copied().max().unwrap_or(n);
    let padded = |t: &Tensor| -> Result<Tensor> {
        if n == most {
            return Ok(t.shallow_clone());
        }
        let mut shape = t.size();
        shape[0] = most - n;
        Ok(Tensor::f_cat(
            &[t, &Tensor::f_zeros(&shape, (t.kind(), t.device()))?],
            0,
        )?)
    };
    let all_labels = group.all_gather(&padded(&labels.f_to_kind(Kind::Int64)?)?)?;
    let all = group.all_gather(&padded(&embeddings.f_detach()?)?)?;
    let mut rows = Vec::with_capacity(sizes.len());
    let mut row_labels = Vec::with_capacity(sizes.len());
    for (rank, &size) in sizes.iter().enumerate() {
        let start = rank as i64 * most;
        rows.push(if rank as i64 == group.rank() {
            embeddings.shallow_clone()
        } else {
            all.f_narrow(0, start, size)?
        });
        row_labels.push(all_labels.f_narrow(0, start, size)?);
    }
    Ok((Tensor::f_cat(&rows, 0)?, Tensor::f_cat(&row_labels, 0)?))
}

/// Makes every rank's gradients those of the global batch's loss, the same on every rank:
/// `grads` (all of them) are summed across ranks, then `replicated` (a subset: the class
/// head's) divided by the world size.
///
/// A network parameter's gradient on one rank flows only through that rank's rows of the
/// global batch ([`global_batch`]); the sum over ranks is the whole gradient. (DDP averages
/// instead because each of its ranks computes a loss of its local batch only; the loss
/// here is already the global one.) The class head meets every row of the global batch
/// directly, so each rank already holds its whole gradient: their mean is that gradient,
/// made bit-identical across ranks.
pub fn reduce_gradients(
    group: &ProcessGroup,
    grads: &[Tensor],
    replicated: &[Tensor],
) -> Result<()> {
    all_reduce_buckets_(group, grads, BUCKET_BYTES)?;
    let _no_grad = tch::no_grad_guard();
    foreach::div_scalar_(replicated, group.world_size() as f64)
}

/// The triplets of a harmonic pool (rows 0..n this model's, n..2n v1's) that involve this
/// model: a triplet wholly of v1 rows is a constant.
pub fn harmonic_triplets(mined: Triplets, n: i64) -> Result<Triplets> {
    let from_v1 = |index: &Tensor| index.f_ge(n);
    let all_v1 = from_v1(&mined.anchors)?
        .f_logical_and(&from_v1(&mined.positives)?)?
        .f_logical_and(&from_v1(&mined.negatives)?)?;
    let keep = all_v1.f_logical_not()?.f_nonzero()?.f_squeeze_dim(1)?;
    Ok(Triplets {
        anchors: mined.anchors.f_index_select(0, &keep)?,
        positives: mined.positives.f_index_select(0, &keep)?,
        negatives: mined.negatives.f_index_select(0, &keep)?,
    })
}

/// Each tensor with a copy of its current value.
fn snapshot(tensors: impl Iterator<Item = Tensor>) -> Result<Vec<(Tensor, Tensor)>> {
    let _no_grad = tch::no_grad_guard();
    tensors
        .map(|t| Ok((t.shallow_clone(), t.f_detach_copy()?)))
        .collect()
}

fn on_device(triplets: Triplets, device: Device) -> Result<Triplets> {
    Ok(Triplets {
        anchors: triplets.anchors.f_to_device(device)?,
        positives: triplets.positives.f_to_device(device)?,
        negatives: triplets.negatives.f_to_device(device)?,
    })
}

/// Statistics of caller-chosen triplets, in the same terms as online mining reports.
fn describe_given(
    embeddings: &Tensor,
    triplets: &Triplets,
    loss: &TripletLoss,
) -> Result<MiningStats> {
    let count = triplets.len();
    if count == 0 {
        return Ok(MiningStats::default());
    }
    let (d_ap, d_an) = triplet_distances(embeddings, triplets, loss)?;
    let active = d_ap
        .f_sub(&d_an)?
        .f_add_scalar(loss.margin)?
        .f_gt(0.0)?
        .f_sum(Kind::Int64)?
        .f_int64_value(&[])?;
    Ok(MiningStats {
        anchor_positive_pairs: count,
        triplets: count,
        active_fraction: active as f64 / count as f64,
        mean_ap: d_ap.f_mean(Kind::Double)?.f_double_value(&[])?,
        mean_an: d_an.f_mean(Kind::Double)?.f_double_value(&[])?,
        no_semi_hard_fraction: 0.0,
    })
}

/// d(a,p) and d(a,n) of each triplet, as the loss measures them (normalized rows if it
/// normalizes).
fn triplet_distances(
    embeddings: &Tensor,
    triplets: &Triplets,
    loss: &TripletLoss,
) -> Result<(Tensor, Tensor)> {
    let embeddings = if loss.normalize {
        crate::distance::normalize_rows(embeddings)?
    } else {
        embeddings.shallow_clone()
    };
    let rows = |index: &Tensor| embeddings.f_index_select(0, index);
    let anchors = rows(&triplets.anchors)?;
    let d_ap = row_distance(&anchors, &rows(&triplets.positives)?, loss.distance)?;
    let d_an = row_distance(&anchors, &rows(&triplets.negatives)?, loss.distance)?;
    Ok((d_ap, d_an))
}

/// The step's embedding norms and triplet distances, read to the host in one transfer.
fn step_distributions(
    embeddings: &Tensor,
    triplets: &Triplets,
    loss: &TripletLoss,
) -> Result<StepDistributions> {
    let norms = embeddings.f_norm_scalaropt_dim(2, [1i64].as_slice(), false)?;
    let (d_ap, d_an) = if triplets.is_empty() {
        let none = Tensor::f_zeros([0], (Kind::Float, embeddings.device()))?;
        (none.shallow_clone(), none)
    } else {
        triplet_distances(embeddings, triplets, loss)?
    };
    let all = Tensor::f_cat(&[&norms, &d_ap, &d_an], 0)?.f_to_kind(Kind::Float)?;
    let mut values = Vec::<f32>::try_from(all.f_to_device(Device::Cpu)?)?;
    let negative_distances = values.split_off(values.len() - d_an.size()[0] as usize);
    let positive_distances = values.split_off(norms.size()[0] as usize);
    Ok(StepDistributions {
        embedding_norms: values,
        positive_distances,
        negative_distances,
    })
}

fn check_triplets(triplets: &Triplets, n: i64) -> Result<()> {
    for (role, indices) in [
        ("anchor", &triplets.anchors),
        ("positive", &triplets.positives),
        ("negative", &triplets.negatives),
    ] {
        if indices.numel() == 0 {
            continue;
        }
        let min = indices.f_min()?.f_int64_value(&[])?;
        let max = indices.f_max()?.f_int64_value(&[])?;
        if min < 0 || max >= n {
            return Err(Error::invalid(format!(
                "{role} indices must be in 0..{n} (the batch), got values from {min} to {max}"
            )));
        }
    }
    Ok(())
}

/// For unit rows, mean ‖eᵢ − eⱼ‖² over i ≠ j is 2 − 2·(‖Σe‖² − N)/(N(N − 1)): O(N·d).
fn mean_pairwise_squared_distance(embeddings: &Tensor) -> Result<f64> {
    let n = embeddings.size()[0] as f64;
    if n < 2.0 {
        return Ok(0.0);
    }
    let norms = embeddings
        .f_square()?
        .f_sum(Kind::Double)?
        .f_double_value(&[])?;
    let total = embeddings.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Double)?;
    let total_sq = total.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    let mean_dot = (total_sq - norms) / (n * (n - 1.0));
    Ok((2.0 * norms / n - 2.0 * mean_dot).max(0.0))
}

fn first_non_finite_weight(model: &FaceNet) -> Result<Option<String>> {
    let _no_grad = tch::no_grad_guard();
    let mut variables: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    // A NaN or Inf anywhere makes its tensor's L2 norm non-finite: one multi-tensor
    // reduction and a single host read in the common case; the search runs only on failure.
    let tensors: Vec<Tensor> = variables.iter().map(|(_, t)| t.shallow_clone()).collect();
    let norms = foreach::norm(&tensors, 2.0)?;
    let total = Tensor::f_stack(&norms, 0)?
        .f_sum(Kind::Float)?
        .f_double_value(&[])?;
    if total.is_finite() {
        return Ok(None);
    }
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, tensor) in &variables {
        if tensor.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
            return Ok(Some(name.clone()));
        }
    }
    // A norm overflowed without any weight being non-finite.
    Ok(None)
}

/// Reads scalar tensors to the host in one transfer: each separate read is a device sync.
fn read_scalars<const N: usize>(parts: [&Tensor; N]) -> Result<[f64; N]> {
    let values = Vec::<f64>::try_from(Tensor::f_stack(&parts, 0)?.f_to_kind(Kind::Double)?)?;
    let mut out = [0.0; N];
    out.copy_from_slice(&values);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::margin::MarginLoss;
    use crate::loss::objective::LossPhase;
    use crate::model::{Arch, ModelConfig};
    use crate::optim::OptimizerKind;

    #[test]
    fn step_seeds_are_the_ones_earlier_versions_drew() {
        // Checkpoints resume with these seeds: a change here would change resumed runs.
        assert_eq!(mix_seed(0, 0), 0);
        assert_eq!(mix_seed(7, 3), 0xe831_3fe1_d735_0611);
        assert_eq!(mix_seed(12345, 1_000_000), 0xec44_e93a_8c20_7539);
    }

    /// Two identities × 4 images of 64×64 noise: the net must pull arbitrary images of an
    /// identity together, so the loss starts high and can only drop by learning.
    pub(super) fn toy_batch() -> (Tensor, Tensor) {
        let mut pixels = Vec::with_capacity(8 * 64 * 64 * 3);
        let mut state = 12345u64;
        for _image in 0..8 {
            for _y in 0..64 {
                for _x in 0..64 {
                    for _c in 0..3 {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        pixels.push((state >> 56) as u8);
                    }
                }
            }
        }
        let images = Tensor::from_slice(&pixels).view([8, 64, 64, 3]);
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 1]);
        (images, labels)
    }

    pub(super) fn tiny(seed: u64) -> FaceNet {
        FaceNet::new(ModelConfig {
            seed,
            ..ModelConfig::new(Arch::Tiny)
        })
        .unwrap()
    }

    pub(super) fn config(lr: f64) -> TrainConfig {
        TrainConfig {
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                lr,
                ..Default::default()
            },
            loss: TripletLoss::default(),
            miner: Miner::default(),
            objective: LossSchedule::default(),
            classes: 0,
            seed: 3,
            precision: Precision::Fp32,
            record_distributions: false,
            freeze: Freeze::default(),
            lr_groups: Vec::new(),
        }
    }

    #[test]
    fn steps_reduce_the_loss_and_report_statistics() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, config(0.05)).unwrap();
        let (images, labels) = toy_batch();
        let losses: Vec<f64> = (0..15)
            .map(|_| state.step(&model, &images, &labels, None).unwrap().loss)
            .collect();
        let first = state.step_count();
        assert_eq!(first, 15);
        assert!(
            losses[14] < losses[0] * 0.5,
            "loss did not drop: {losses:?}"
        );
        let stats = TrainState::new(&model, config(0.05))
            .unwrap()
            .step(&model, &images, &labels, None)
            .unwrap();
        // 2 identities × 4 images: 2·4·3 ordered anchor-positive pairs.
        assert_eq!(stats.mining.anchor_positive_pairs, 24);
        assert!(stats.mean_pairwise_distance > 0.0);
    }

    #[test]
    fn distributions_are_recorded_only_when_asked_and_agree_with_the_mining_means() {
        let model = tiny(1);
        let (images, labels) = toy_batch();
        let off = TrainState::new(&model, config(0.05))
            .unwrap()
            .step(&model, &images, &labels, None)
            .unwrap();
        assert_eq!(off.distributions, None);
        let recording = TrainConfig {
            record_distributions: true,
            ..config(0.05)
        };
        let stats = TrainState::new(&model, recording)
            .unwrap()
            .step(&model, &images, &labels, None)
            .unwrap();
        let d = stats.distributions.expect("asked for");
        assert_eq!(d.embedding_norms.len(), 8);
        // The tiny arch ends in an L2 layer.
        assert!(
            d.embedding_norms.iter().all(|n| (n - 1.0).abs() < 1e-4),
            "{:?}",
            d.embedding_norms
        );
        let triplets = stats.mining.triplets as usize;
        assert!(triplets > 0);
        assert_eq!(d.positive_distances.len(), triplets);
        assert_eq!(d.negative_distances.len(), triplets);
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        assert!((mean(&d.positive_distances) - stats.mining.mean_ap).abs() < 1e-5);
        assert!((mean(&d.negative_distances) - stats.mining.mean_an).abs() < 1e-5);
    }

    #[test]
    fn same_seed_gives_the_same_loss_sequence() {
        let run = || {
            let model = tiny(2);
            let mut state = TrainState::new(&model, config(0.05)).unwrap();
            let (images, labels) = toy_batch();
            (0..4)
                .map(|_| state.step(&model, &images, &labels, None).unwrap().loss)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn given_triplets_are_used_and_checked() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, config(0.05)).unwrap();
        let (images, labels) = toy_batch();
        let triplets = |a: &[i64], p: &[i64], n: &[i64]| Triplets {
            anchors: Tensor::from_slice(a),
            positives: Tensor::from_slice(p),
            negatives: Tensor::from_slice(n),
        };
        let stats = state
            .step(
                &model,
                &images,
                &labels,
                Some(triplets(&[0, 4], &[1, 5], &[4, 0])),
            )
            .unwrap();
        assert_eq!(stats.mining.triplets, 2);
        assert!(stats.updated);
        let err = state
            .step(&model, &images, &labels, Some(triplets(&[0], &[1], &[8])))
            .unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
        assert!(err.to_string().contains("0..8"), "{err}");
    }

    #[test]
    fn a_non_finite_loss_stops_without_touching_the_weights() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, config(0.05)).unwrap();
        let (images, labels) = toy_batch();
        let before: Vec<Tensor> = model
            .var_store()
            .trainable_variables()
            .iter()
            .map(Tensor::copy)
            .collect();
        let poisoned =
            images
                .to_kind(Kind::Float)
                .index_fill(0, &Tensor::from_slice(&[0i64]), f64::NAN);
        let err = state.step(&model, &poisoned, &labels, None).unwrap_err();
        assert_eq!(err.code(), "ERR_NON_FINITE");
        assert!(err.to_string().contains("step 0"), "{err}");
        for (old, new) in before.iter().zip(model.var_store().trainable_variables()) {
            assert!(old.equal(&new));
        }
    }

    fn with_objective(phases: Vec<LossPhase>) -> TrainConfig {
        TrainConfig {
            objective: LossSchedule::new(phases).unwrap(),
            classes: 2,
            ..config(0.05)
        }
    }

    fn arcface(from_step: i64, triplet_weight: f64) -> LossPhase {
        LossPhase {
            from_step,
            triplet_weight,
            class_loss: Some(MarginLoss::ArcFace {
                margin: 0.2,
                scale: 16.0,
                easy_margin: false,
            }),
        }
    }

    #[test]
    fn a_classification_loss_trains_the_head_and_the_network() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, with_objective(vec![arcface(0, 0.0)])).unwrap();
        let head_before = state.class_head().unwrap().weights().copy();
        let (images, labels) = toy_batch();
        let stats: Vec<StepStats> = (0..15)
            .map(|_| state.step(&model, &images, &labels, None).unwrap())
            .collect();
        assert!(stats.iter().all(|s| s.updated && s.triplet_loss == 0.0));
        assert!(stats.iter().all(|s| s.mining.triplets == 0));
        assert_eq!(stats[0].loss, stats[0].class_loss);
        assert!(
            stats[14].loss < stats[0].loss * 0.5,
            "loss did not drop: {:?}",
            stats.iter().map(|s| s.loss).collect::<Vec<_>>()
        );
        assert!(!head_before.equal(state.class_head().unwrap().weights()));
    }

    #[test]
    fn a_weighted_sum_adds_the_scaled_triplet_loss() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, with_objective(vec![arcface(0, 0.5)])).unwrap();
        let (images, labels) = toy_batch();
        let stats = state.step(&model, &images, &labels, None).unwrap();
        assert!(stats.triplet_loss > 0.0 && stats.class_loss > 0.0);
        assert!(stats.mining.triplets > 0);
        let sum = stats.class_loss + 0.5 * stats.triplet_loss;
        assert!((stats.loss - sum).abs() < 1e-5, "{} vs {sum}", stats.loss);
    }

    #[test]
    fn a_schedule_switches_the_loss_at_its_step() {
        let model = tiny(1);
        let phases = vec![
            arcface(0, 0.0),
            LossPhase {
                from_step: 2,
                ..LossPhase::triplet()
            },
        ];
        let mut state = TrainState::new(&model, with_objective(phases)).unwrap();
        let (images, labels) = toy_batch();
        let stats: Vec<StepStats> = (0..4)
            .map(|_| state.step(&model, &images, &labels, None).unwrap())
            .collect();
        for s in &stats[..2] {
            assert!(s.class_loss > 0.0 && s.triplet_loss == 0.0, "{s:?}");
        }
        for s in &stats[2..] {
            assert!(s.class_loss == 0.0 && s.triplet_loss > 0.0, "{s:?}");
            assert_eq!(s.loss, s.triplet_loss);
        }
        let err = state
            .step(
                &model,
                &images,
                &Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 7]),
                None,
            )
            .map(|_| ());
        // Triplet phases only compare labels: any value is fine there.
        assert!(err.is_ok());
    }

    #[test]
    fn labels_outside_the_head_are_refused() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, with_objective(vec![arcface(0, 0.0)])).unwrap();
        let (images, _) = toy_batch();
        let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 1, 1, 1, 2]);
        let err = state.step(&model, &images, &labels, None).unwrap_err();
        assert!(err.to_string().contains("0..2"), "{err}");
        let one_class = TrainConfig {
            classes: 1,
            ..with_objective(vec![arcface(0, 0.0)])
        };
        let err = TrainState::new(&model, one_class).err().unwrap();
        assert!(err.to_string().contains("at least 2 classes"), "{err}");
    }

    #[test]
    fn one_identity_batches_skip_the_update() {
        let model = tiny(1);
        let mut state = TrainState::new(&model, config(0.05)).unwrap();
        let (images, _) = toy_batch();
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        let stats = state.step(&model, &images, &labels, None).unwrap();
        assert!(!stats.updated);
        assert_eq!(state.step_count(), 1);
    }

    #[test]
    fn harmonic_steps_match_a_brute_force_triplet_loss_over_both_versions() {
        use crate::loss::Reducer;
        use crate::preprocess::to_network_input;
        let model = tiny(4);
        let margin = 0.5;
        let config = TrainConfig {
            miner: Miner::BatchAll { margin },
            loss: TripletLoss {
                margin,
                reducer: Reducer::MeanActive,
                ..TripletLoss::default()
            },
            ..config(0.05)
        };
        let mut state = TrainState::new(&model, config).unwrap();
        let (images, labels) = toy_batch();
        // The v1 side: unit rows from another model, constants of the step.
        let v1 = tiny(5).embed(&images).unwrap();
        let v2 = model
            .forward_t(
                &to_network_input(&images, Device::Cpu, model.config().normalization).unwrap(),
                true,
            )
            .detach();
        let pool = Tensor::cat(&[&v2, &v1], 0);
        let label: Vec<i64> = Vec::<i64>::try_from(&labels).unwrap();
        let n = label.len();
        let d = |i: usize, j: usize| {
            (pool.get(i as i64) - pool.get(j as i64))
                .square()
                .sum(Kind::Double)
                .double_value(&[])
        };
        let (mut sum, mut count, mut mixed) = (0.0, 0, 0);
        for a in 0..2 * n {
            for p in 0..2 * n {
                for q in 0..2 * n {
                    let same = label[a % n] == label[p % n] && a != p;
                    if !same || label[q % n] == label[a % n] || (a >= n && p >= n && q >= n) {
                        continue;
                    }
                    let hinge = d(a, p) - d(a, q) + margin;
                    if hinge > 0.0 {
                        sum += hinge;
                        count += 1;
                        if (a >= n) != (p >= n) || (a >= n) != (q >= n) {
                            mixed += 1;
                        }
                    }
                }
            }
        }
        assert!(
            count > 0 && mixed > 0,
            "{count} triplets, {mixed} mixing versions"
        );
        let stats = state.harmonic_step(&model, &images, &labels, &v1).unwrap();
        assert_eq!(stats.mining.triplets, count);
        let expected = sum / count as f64;
        assert!(
            (stats.loss - expected).abs() < 1e-4,
            "{} vs {expected}",
            stats.loss
        );
        // v1 is only read: its embeddings do not move.
        assert!(tiny(5).embed(&images).unwrap().equal(&v1));
        let wrong = Tensor::zeros([8, 64], (Kind::Float, Device::Cpu));
        let err = state
            .harmonic_step(&model, &images, &labels, &wrong)
            .unwrap_err();
        assert_eq!(err.code(), "ERR_SHAPE");
        assert!(err.to_string().contains("8×128"), "{err}");
    }

    #[test]
    fn frozen_layers_keep_their_weights_and_statistics() {
        let model = tiny(1);
        let config = TrainConfig {
            freeze: Freeze {
                prefixes: vec![],
                train_last_blocks: Some(2),
            },
            ..config(0.05)
        };
        let mut state = TrainState::new(&model, config).unwrap();
        let before: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.copy()))
            .collect();
        let (images, labels) = toy_batch();
        for _ in 0..3 {
            assert!(state.step(&model, &images, &labels, None).unwrap().updated);
        }
        let after = model.var_store().variables();
        for (name, old) in &before {
            let unchanged = old.equal(&after[name]);
            let trains = name.starts_with("fc.") || name.starts_with("bn.");
            assert_eq!(unchanged, !trains, "{name}");
        }
        // No optimizer state for frozen parameters.
        assert!(state
            .optimizer()
            .parameter_names()
            .all(|n| n.starts_with("fc.") || n.starts_with("bn.")));
    }
}

/// 2 ranks with P/2 identities each against 1 rank with all P: the same loss and, once
/// summed across ranks, the same gradients. The embedding net is a linear map (one row's
/// embedding depends on that row alone): batch norm in training mode normalizes by each
/// rank's own batch, as DDP without SyncBatchNorm does, so networks with it are not
/// compared row for row.
#[cfg(test)]
mod distributed_tests {
    use super::*;
    use crate::distributed::tests::{free_port, local, spawn_rank1, worker_port};
    use crate::loss::margin::MarginLoss;
    use crate::loss::Reducer;
    use crate::mining::{Choice, Fallback};
    use tch::nn::{self, Module};

    const P: i64 = 6;
    const K: i64 = 4;
    const IN: i64 = 24;
    const DIM: i64 = 8;

    fn miners() -> Vec<(&'static str, Miner, Reducer)> {
        vec![
            (
                "semi-hard",
                Miner::SemiHard {
                    margin: 0.2,
                    choice: Choice::Random,
                    fallback: Fallback::NearestFartherElseFarthest,
                },
                Reducer::Mean,
            ),
            (
                "batch-hard",
                Miner::BatchHard { margin: 0.2 },
                Reducer::Mean,
            ),
            (
                "batch-all",
                Miner::BatchAll { margin: 0.2 },
                Reducer::MeanActive,
            ),
        ]
    }

    /// The global batch: P identities × K rows, the identities of rank r being r·P/2.. .
    fn inputs() -> (Tensor, Tensor) {
        tch::manual_seed(11);
        let x = Tensor::randn([P * K, IN], (Kind::Float, Device::Cpu));
        let labels =
            Tensor::arange(P, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(K, 0, None);
        (x, labels)
    }

    /// The loss of the rows `x` (with `labels`) as a step computes it (global_batch, mine,
    /// triplet loss, margin loss), and the gradients of the embedding map and class head
    /// after backward (and the all-reduce, in a group).
    fn loss_and_grads(
        group: Option<&ProcessGroup>,
        x: &Tensor,
        labels: &Tensor,
        miner: &Miner,
        reducer: Reducer,
    ) -> (f64, Vec<Tensor>) {
        let vs = nn::VarStore::new(Device::Cpu);
        tch::manual_seed(5);
        let map = nn::linear(vs.root() / "map", IN, DIM, Default::default());
        let head = (vs.root() / "head").randn("weights", &[3 * P, DIM], 0.0, 0.1);
        let embeddings = crate::distance::normalize_rows(&map.forward(x)).unwrap();
        let (embeddings, labels) = match group {
            Some(group) => global_batch(group, &embeddings, labels).unwrap(),
            None => (embeddings, labels.shallow_clone()),
        };
        let loss_config = TripletLoss {
            margin: miner.margin(),
            reducer,
            ..TripletLoss::default()
        };
        let (triplets, _) = mine(
            &embeddings.detach(),
            &labels,
            miner,
            loss_config.distance,
            mix_seed(3, 0),
        )
        .unwrap();
        let triplet = triplet_loss_with_count(&embeddings, &triplets, &loss_config)
            .unwrap()
            .loss;
        let arcface = MarginLoss::ArcFace {
            margin: 0.2,
            scale: 16.0,
            easy_margin: false,
        };
        let class = margin_loss_in_range(&arcface, &embeddings, &labels, &head, None).unwrap();
        let loss = triplet + class * 0.5;
        loss.backward();
        let mut grads: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.grad()))
            .collect();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        let head: Vec<Tensor> = grads
            .iter()
            .filter(|(name, _)| name.starts_with("head."))
            .map(|(_, g)| g.shallow_clone())
            .collect();
        let grads: Vec<Tensor> = grads.into_iter().map(|(_, g)| g).collect();
        if let Some(group) = group {
            reduce_gradients(group, &grads, &head).unwrap();
        }
        (loss.double_value(&[]), grads)
    }

    /// Both ranks compare with the 1-rank run, which each computes on its own.
    fn compare(rank: i64, port: u16) {
        let group = ProcessGroup::join(&local(port, rank, 2, 30)).unwrap();
        let (x, labels) = inputs();
        let half = P * K / 2;
        let x_local = x.narrow(0, rank * half, half);
        let labels_local = labels.narrow(0, rank * half, half);
        for (name, miner, reducer) in miners() {
            let (loss_1, grads_1) = loss_and_grads(None, &x, &labels, &miner, reducer);
            let (loss_2, grads_2) =
                loss_and_grads(Some(&group), &x_local, &labels_local, &miner, reducer);
            assert!(loss_1 > 0.0, "{name}: nothing to learn from");
            assert!(
                (loss_1 - loss_2).abs() < 1e-5,
                "{name}, rank {rank}: loss {loss_2} on 2 ranks, {loss_1} on 1"
            );
            for (g1, g2) in grads_1.iter().zip(&grads_2) {
                let diff = (g1 - g2).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-5,
                    "{name}, rank {rank}: gradients differ by {diff}"
                );
            }
        }
    }

    #[test]
    #[ignore = "rank 1 of two_ranks_with_half_the_identities_each_match_one_rank_with_all"]
    fn equivalence_rank1() {
        if let Some(port) = worker_port() {
            compare(1, port);
        }
    }

    #[test]
    fn two_ranks_with_half_the_identities_each_match_one_rank_with_all() {
        let port = free_port();
        let mut child = spawn_rank1("train::distributed_tests::equivalence_rank1", port, &[]);
        compare(0, port);
        assert!(child.wait().unwrap().success(), "rank 1 failed");
    }

    #[test]
    #[ignore = "rank 1 of training_steps_keep_every_rank_on_the_same_weights"]
    fn steps_rank1() {
        if let Some(port) = worker_port() {
            steps_on(1, port);
        }
    }

    /// Three steps of the tiny net (batch norm included) on each rank's half of the batch;
    /// asserts that every rank ends with the same weights, and returns the losses.
    fn steps_on(rank: i64, port: u16) -> Vec<f64> {
        let group = ProcessGroup::join(&local(port, rank, 2, 30)).unwrap();
        // Another seed per rank: the broadcast from rank 0 must make them equal.
        let model = super::tests::tiny(1 + rank as u64);
        let mut state = TrainState::new(&model, super::tests::config(0.05)).unwrap();
        state.join_group(&model, group).unwrap();
        let (images, labels) = super::tests::toy_batch();
        // Rank 0 gets three of identity 0's images and one of identity 1's, rank 1 the rest.
        let order = Tensor::from_slice(&[0i64, 1, 2, 4, 3, 5, 6, 7]);
        let images = images.index_select(0, &order.narrow(0, rank * 4, 4));
        let labels = labels.index_select(0, &order.narrow(0, rank * 4, 4));
        let stats: Vec<StepStats> = (0..3)
            .map(|_| state.step(&model, &images, &labels, None).unwrap())
            .collect();
        // Mined over the global batch: 2 identities × 4 images, 24 anchor-positive pairs.
        assert_eq!(stats[0].mining.anchor_positive_pairs, 24);
        // The trainable weights (batch-norm statistics follow each rank's own batch).
        let mut weights: Vec<(String, Tensor)> = model
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        let flat = Tensor::cat(
            &weights
                .iter()
                .map(|(_, t)| t.detach().reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        let all = state.process_group().unwrap().all_gather(&flat).unwrap();
        let n = flat.size()[0];
        assert!(
            all.narrow(0, 0, n).equal(&all.narrow(0, n, n)),
            "rank {rank}: the ranks' weights differ after 3 steps"
        );
        stats.iter().map(|s| s.loss).collect()
    }

    #[test]
    fn training_steps_keep_every_rank_on_the_same_weights() {
        let port = free_port();
        let mut child = spawn_rank1("train::distributed_tests::steps_rank1", port, &[]);
        let losses = steps_on(0, port);
        assert!(child.wait().unwrap().success(), "rank 1 failed");
        assert!(losses[2] < losses[0], "{losses:?}");
    }
}
