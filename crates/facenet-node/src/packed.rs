//! `BindingNpyImages`: a memory-mapped packed dataset with its own gather thread, so the
//! gather of batch n+1 runs while the model's worker trains on batch n. A gathered batch
//! stays a tensor (`BindingImageBatch`) until a train step takes it: its pixels never
//! cross into JavaScript.

use crate::error::{coded, invalid, to_js};
use crate::error::{OrNapiCode, Result};
use crate::options::BindingFit;
use crate::worker::{reject, Deferred, Worker, MAX_THREADS};
use crate::BindingModel;
use facenet::augment::{self, AugmentOptions, Fit};
use facenet::packed::{Layout, NpyImages};
use napi::bindgen_prelude::{Int32Array, Object, Uint8Array};
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, Mutex};
use tch::Tensor;

#[napi]
pub struct BindingNpyImages {
    images: Arc<NpyImages>,
    worker: Arc<Worker>,
}

/// Maps an N×H×W×3 uint8 C-order `.npy`; only its header is read.
#[napi]
pub fn open_npy_images(path: String) -> Result<BindingNpyImages> {
    let images = NpyImages::open(&path).map_err(to_js)?;
    // Off the JS thread and libuv's pool. A gather is memcpy from the page cache; the
    // intra-op threads serve only the CPU augmentation of `gather(…, augment)`.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let worker = Worker::spawn("facenet-npy", threads)?;
    Ok(BindingNpyImages {
        images: Arc::new(images),
        worker: Arc::new(worker),
    })
}

fn rows_of(indices: &[i32]) -> Vec<i64> {
    indices.iter().map(|&i| i64::from(i)).collect()
}

#[napi]
impl BindingNpyImages {
    #[napi(getter)]
    pub fn count(&self) -> f64 {
        self.images.len() as f64
    }

    #[napi(getter)]
    pub fn height(&self) -> u32 {
        self.images.height() as u32
    }

    #[napi(getter)]
    pub fn width(&self) -> u32 {
        self.images.width() as u32
    }

    /// Gathers rows `indices` into one B×H×W×3 uint8 tensor on the gather thread
    /// (page-locked when `pinned` and CUDA is present). With `augment`, the gather thread
    /// also augments the batch on the CPU to `augment.height × augment.width` (float
    /// 0..255), as a train step would on its device: for benchmarks and inspection.
    #[napi(ts_return_type = "Promise<BindingImageBatch>")]
    pub fn gather<'env>(
        &self,
        env: &'env Env,
        indices: Int32Array,
        pinned: bool,
        augment: Option<BindingGatherAugment>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<BindingImageBatch>, Object) =
            env.create_deferred().or_code()?;
        let images = Arc::clone(&self.images);
        let rows = rows_of(&indices);
        let augment = augment
            .map(|a| -> Result<_> {
                let (options, center_crop, fit, seed) = parse_transform(&a.transform)?;
                let transforms = augment::draw_batch(
                    rows.len(),
                    options.as_ref(),
                    center_crop,
                    seed,
                    u64::from(a.transform.epoch),
                    u64::from(a.transform.batch),
                );
                let size = facenet::InputSize {
                    height: i64::from(a.height),
                    width: i64::from(a.width),
                };
                Ok((transforms, size, fit))
            })
            .transpose()?;
        self.worker.run(
            deferred,
            move |_| {
                let batch = images
                    .gather(&rows, Layout::ChannelsLast, pinned)
                    .map_err(to_js)?;
                match augment {
                    None => Ok(batch),
                    Some((transforms, size, fit)) => {
                        augment::apply(&batch, &transforms, size, fit, tch::Device::Cpu)
                            .map_err(to_js)
                    }
                }
            },
            |_env, tensor| Ok(BindingImageBatch::new(tensor)),
        );
        Ok(promise)
    }

    /// The pixels of rows `indices`, copied into JavaScript: for the paths that decode
    /// image by image (the sharp loader, embedding a dataset), not for training batches.
    #[napi(ts_return_type = "Promise<Uint8Array>")]
    pub fn read<'env>(&self, env: &'env Env, indices: Int32Array) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<Uint8Array>, Object) =
            env.create_deferred().or_code()?;
        let images = Arc::clone(&self.images);
        let rows = rows_of(&indices);
        self.worker.run(
            deferred,
            move |_| {
                let mut out = Vec::new();
                for &row in &rows {
                    out.extend_from_slice(&images.row(row).map_err(to_js)?);
                }
                Ok(out)
            },
            |_env, bytes| Ok(Uint8Array::new(bytes)),
        );
        Ok(promise)
    }

    /// Stops the gather thread; the map is released when the object is collected.
    #[napi]
    pub fn close(&self) {
        self.worker.dispose();
    }
}

/// A gathered batch, held as a tensor until one train step takes it.
#[napi]
pub struct BindingImageBatch {
    tensor: Mutex<Option<Tensor>>,
    shape: Vec<u32>,
}

impl BindingImageBatch {
    fn new(tensor: Tensor) -> Self {
        let shape = tensor.size().iter().map(|&d| d as u32).collect();
        Self {
            tensor: Mutex::new(Some(tensor)),
            shape,
        }
    }

    fn take(&self) -> Result<Tensor> {
        self.tensor
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .ok_or_else(|| invalid("this gathered batch was already used by a train step"))
    }
}

#[napi]
impl BindingImageBatch {
    /// B, H, W, 3.
    #[napi(getter)]
    pub fn shape(&self) -> Vec<u32> {
        self.shape.clone()
    }

    /// A copy of the pixels (B×H×W×3 uint8; an augmented batch rounded), for tests and
    /// inspection.
    #[napi]
    pub fn pixels(&self) -> Result<Uint8Array> {
        let guard = self
            .tensor
            .lock()
            .map_err(|_| invalid("batch lock poisoned"))?;
        let tensor = guard
            .as_ref()
            .ok_or_else(|| invalid("this gathered batch was already used by a train step"))?;
        let bytes = tensor
            .f_round()
            .and_then(|t| t.f_clamp(0.0, 255.0))
            .and_then(|t| t.f_to_kind(tch::Kind::Uint8))
            .and_then(|t| Vec::<u8>::try_from(t.flatten(0, -1)))
            .map_err(|e| to_js(e.into()))?;
        Ok(Uint8Array::new(bytes))
    }
}

#[napi(object)]
pub struct BindingGatherAugment {
    pub transform: BindingBatchTransform,
    pub height: u32,
    pub width: u32,
}

#[napi(object)]
pub struct BindingAugmentOptions {
    pub crop_scale: f64,
    pub flip: bool,
    pub max_rotation: f64,
    pub brightness: f64,
}

/// How a gathered batch becomes the network's input: the draw's stream (seed, epoch,
/// batch), the augmentation (absent: resize only), the centre crop and the fit.
#[napi(object)]
pub struct BindingBatchTransform {
    pub augment: Option<BindingAugmentOptions>,
    pub center_crop: f64,
    pub fit: BindingFit,
    pub seed: f64,
    pub epoch: u32,
    pub batch: u32,
}

fn parse_transform(o: &BindingBatchTransform) -> Result<(Option<AugmentOptions>, f64, Fit, u64)> {
    let augment = o
        .augment
        .as_ref()
        .map(|a| {
            let options = AugmentOptions {
                crop_scale: a.crop_scale,
                flip: a.flip,
                max_rotation: a.max_rotation,
                brightness: a.brightness,
            };
            options.validate().map(|()| options)
        })
        .transpose()
        .map_err(to_js)?;
    if !(o.center_crop > 0.0 && o.center_crop <= 1.0) {
        return Err(invalid(format!(
            "centerCrop must be in (0, 1], got {}",
            o.center_crop
        )));
    }
    if !(o.seed.is_finite() && o.seed >= 0.0 && o.seed.fract() == 0.0) {
        return Err(invalid(format!(
            "seed must be a non-negative integer, got {}",
            o.seed
        )));
    }
    Ok((augment, o.center_crop, Fit::from(o.fit), o.seed as u64))
}

#[napi]
impl BindingModel {
    /// One optimizer step on a gathered batch: augmented (or only resized) to the model's
    /// input on its device, then trained as `trainStep` trains. Takes the batch's tensor.
    #[napi(ts_return_type = "Promise<BindingStepStats>")]
    pub fn train_step_gathered<'env>(
        &self,
        env: &'env Env,
        batch: &BindingImageBatch,
        labels: Int32Array,
        transform: BindingBatchTransform,
        triplets: Option<Int32Array>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<crate::train::BindingStepStats>, Object) =
            env.create_deferred().or_code()?;
        let prepared = (|| -> Result<_> {
            let (augment, center_crop, fit, seed) = parse_transform(&transform)?;
            let count = batch.shape.first().copied().unwrap_or(0) as usize;
            if labels.len() != count {
                return Err(coded(
                    "ERR_SHAPE",
                    format!("{} labels for {count} images", labels.len()),
                ));
            }
            let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
            let triplets = triplets
                .as_deref()
                .map(crate::mining::triplets_from)
                .transpose()?;
            let transforms = augment::draw_batch(
                count,
                augment.as_ref(),
                center_crop,
                seed,
                u64::from(transform.epoch),
                u64::from(transform.batch),
            );
            Ok((
                batch.take()?,
                Tensor::from_slice(&labels),
                triplets,
                transforms,
                fit,
            ))
        })();
        match prepared {
            Ok((images, labels, triplets, transforms, fit)) => self.worker.run(
                deferred,
                move |state| {
                    let model = state.model.as_ref().ok_or_else(crate::error::disposed)?;
                    let training = state
                        .training
                        .as_mut()
                        .ok_or_else(crate::train::not_configured)?;
                    let input = augment::apply(
                        &images,
                        &transforms,
                        model.input_size(),
                        fit,
                        model.device(),
                    )
                    .map_err(to_js)?;
                    training
                        .step(model, &input, &labels, triplets)
                        .map(crate::train::step_to_js)
                        .map_err(to_js)
                },
                |_env, stats| Ok(stats),
            ),
            Err(error) => reject(deferred, error),
        }
        Ok(promise)
    }
}
