//! Mining and triplet loss for JavaScript callers who bring their own training loop.
//! Each call copies its arrays into tensors once and runs on a short-lived thread of its
//! own, so neither the JS thread nor libuv's pool waits on it.

use crate::error::{coded, from_panic, to_js};
use crate::error::{OrNapiCode, Result};
use crate::options::{
    BindingDistance, BindingFallback, BindingMiner, BindingNegativeChoice, BindingReducer,
};
use crate::worker::thread_count;
use crate::worker::{reject, resolve, Deferred};
use facenet::loss::{triplet_loss_with_count, TripletLoss};
use facenet::mining::{mine, mine_epoch_with, Miner, MiningStats, Triplets};
use napi::bindgen_prelude::{Float32Array, Int32Array, Object};
use napi::Env;
use napi_derive::napi;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::{Kind, Tensor};

#[napi(object)]
pub struct BindingMineOptions {
    pub miner: BindingMiner,
    pub margin: f64,
    pub choice: BindingNegativeChoice,
    pub fallback: BindingFallback,
    pub distance: BindingDistance,
    /// Checked by the TS layer: a non-negative integer.
    pub seed: i64,
}

#[napi(object)]
pub struct BindingMiningStats {
    pub anchor_positive_pairs: f64,
    pub triplets: f64,
    pub active_fraction: f64,
    pub mean_ap: f64,
    pub mean_an: f64,
    pub no_semi_hard_fraction: f64,
}

#[napi(object)]
pub struct BindingMined {
    /// anchors, then positives, then negatives: 3 × triplets indices.
    pub triplets: Int32Array,
    pub stats: BindingMiningStats,
}

#[napi(object)]
pub struct BindingLossOptions {
    pub margin: f64,
    pub reducer: BindingReducer,
    pub normalize: bool,
    pub distance: BindingDistance,
    pub threads: u32,
}

#[napi(object)]
pub struct BindingLoss {
    pub loss: f64,
    pub active: u32,
    /// d loss / d embeddings, N×d row-major.
    pub gradient: Float32Array,
}

fn torch(e: tch::TchError) -> crate::error::Error {
    to_js(e.into())
}

fn embeddings_tensor(values: &[f32], count: u32, dim: u32) -> Result<Tensor> {
    let expected = count as usize * dim as usize;
    if values.len() != expected || dim == 0 {
        return Err(coded(
            "ERR_SHAPE",
            format!(
                "embeddings have {} values but {count}×{dim} needs {expected}",
                values.len()
            ),
        ));
    }
    Tensor::f_from_slice(values)
        .and_then(|t| t.f_view([i64::from(count), i64::from(dim)]))
        .map_err(torch)
}

pub(crate) fn parse_miner(o: &BindingMineOptions) -> Miner {
    let margin = o.margin;
    match o.miner {
        BindingMiner::SemiHard => Miner::SemiHard {
            margin,
            choice: o.choice.into(),
            fallback: o.fallback.into(),
        },
        BindingMiner::BatchHard => Miner::BatchHard { margin },
        BindingMiner::BatchAll => Miner::BatchAll { margin },
        BindingMiner::Hard => Miner::Hard { margin },
        BindingMiner::Random => Miner::Random { margin },
    }
}

/// Splits the flat index array the TS layer sends and receives (3 × T values: anchors,
/// then positives, then negatives) into the core's triplets.
pub(crate) fn triplets_from(flat: &[i32]) -> Result<Triplets> {
    if !flat.len().is_multiple_of(3) {
        return Err(coded(
            "ERR_SHAPE",
            format!(
                "triplets must hold anchors, positives and negatives of equal length (a multiple of 3 values), got {}",
                flat.len()
            ),
        ));
    }
    let t = flat.len() / 3;
    let part = |k: usize| {
        let values: Vec<i64> = flat[k * t..(k + 1) * t]
            .iter()
            .map(|&v| i64::from(v))
            .collect();
        Tensor::f_from_slice(&values).map_err(torch)
    };
    Ok(Triplets {
        anchors: part(0)?,
        positives: part(1)?,
        negatives: part(2)?,
    })
}

pub(crate) fn stats_to_js(s: &MiningStats) -> BindingMiningStats {
    BindingMiningStats {
        anchor_positive_pairs: s.anchor_positive_pairs as f64,
        triplets: s.triplets as f64,
        active_fraction: s.active_fraction,
        mean_ap: s.mean_ap,
        mean_an: s.mean_an,
        no_semi_hard_fraction: s.no_semi_hard_fraction,
    }
}

/// Runs `work` on a new thread with `threads` libtorch threads and settles the promise.
pub(crate) fn spawn<T, V, W, C>(env: &Env, threads: u32, work: W, convert: C) -> Result<Object<'_>>
where
    T: Send + 'static,
    V: napi::bindgen_prelude::ToNapiValue + 'static,
    W: FnOnce() -> Result<T> + Send + 'static,
    C: FnOnce(T) -> Result<V> + Send + 'static,
{
    let threads = thread_count(f64::from(threads))?;
    let (deferred, promise): (Deferred<V>, Object) = env.create_deferred().or_code()?;
    std::thread::Builder::new()
        .name("facenet-call".to_owned())
        .spawn(move || {
            // Bounded by thread_count, so the cast cannot wrap.
            tch::set_num_threads(threads as i32);
            match catch_unwind(AssertUnwindSafe(work)) {
                Ok(Ok(value)) => resolve(deferred, value, move |_env, value| convert(value)),
                Ok(Err(error)) => reject(deferred, error),
                Err(payload) => reject(deferred, from_panic(payload)),
            }
        })
        .map_err(|e| coded("ERR_TORCH", format!("could not start a thread: {e}")))?;
    Ok(promise)
}

/// Mines index triplets from N×dim embeddings and N labels, on `threads` libtorch threads.
/// With `epoch_chunk`, the embeddings are a whole data set, mined that many anchors at a
/// time (the notebook's per-epoch list); without it, one batch compared all with all.
#[napi(ts_return_type = "Promise<BindingMined>")]
pub fn mine_triplets<'env>(
    env: &'env Env,
    embeddings: Float32Array,
    labels: Int32Array,
    dim: u32,
    options: BindingMineOptions,
    threads: u32,
    epoch_chunk: Option<u32>,
) -> Result<Object<'env>> {
    let count = labels.len() as u32;
    let e = embeddings_tensor(&embeddings, count, dim)?;
    let l = Tensor::f_from_slice(&labels).map_err(torch)?;
    let miner = parse_miner(&options);
    let distance = options.distance.into();
    let seed = options.seed as u64;
    spawn(
        env,
        threads,
        move || {
            let (t, stats) = if let Some(chunk) = epoch_chunk {
                mine_epoch_with(&e, &l, &miner, distance, i64::from(chunk), seed)
            } else {
                mine(&e, &l, &miner, distance, seed)
            }
            .map_err(to_js)?;
            let flat = Tensor::f_cat(&[&t.anchors, &t.positives, &t.negatives], 0)
                .and_then(|x| x.f_to_kind(Kind::Int))
                .map_err(torch)?;
            let flat = Vec::<i32>::try_from(flat).map_err(torch)?;
            Ok((flat, stats))
        },
        |(flat, stats)| {
            Ok(BindingMined {
                triplets: Int32Array::new(flat),
                stats: stats_to_js(&stats),
            })
        },
    )
}

/// The reduced triplet loss and its gradient with respect to the embeddings.
#[napi(ts_return_type = "Promise<BindingLoss>")]
pub fn triplet_loss<'env>(
    env: &'env Env,
    embeddings: Float32Array,
    count: u32,
    dim: u32,
    triplets: Int32Array,
    options: BindingLossOptions,
) -> Result<Object<'env>> {
    let e = embeddings_tensor(&embeddings, count, dim)?;
    let triplets = triplets_from(&triplets)?;
    let config = TripletLoss {
        margin: options.margin,
        reducer: options.reducer.into(),
        normalize: options.normalize,
        distance: options.distance.into(),
    };
    spawn(
        env,
        options.threads,
        move || {
            let x = e.set_requires_grad(true);
            let out = triplet_loss_with_count(&x, &triplets, &config).map_err(to_js)?;
            let loss = out.loss.f_double_value(&[]).map_err(torch)?;
            let grads = Tensor::f_run_backward(&[&out.loss], &[&x], false, false).map_err(torch)?;
            let grad = grads
                .first()
                .ok_or_else(|| coded("ERR_TORCH", "no gradient"))?
                .f_flatten(0, -1)
                .map_err(torch)?;
            let grad = Vec::<f32>::try_from(grad).map_err(torch)?;
            Ok((loss, out.active as u32, grad))
        },
        |(loss, active, gradient)| {
            Ok(BindingLoss {
                loss,
                active,
                gradient: Float32Array::new(gradient),
            })
        },
    )
}
