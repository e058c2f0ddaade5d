//! `BindingDetector`: an MTCNN on its own worker thread (see `worker.rs`).

use crate::error::{self, to_js};
use crate::error::{OrNapiCode, Result};
use crate::pixels::Pixels;
use crate::worker::{reject, thread_count, Deferred, Worker, MAX_THREADS};
use facenet::detect::{DetectOptions, Mtcnn};
use napi::bindgen_prelude::{Either, Float32Array, Object, Uint8Array};
use napi::Env;
use napi_derive::napi;
use std::sync::Arc;
use tch::Kind;

#[napi(object)]
pub struct BindingDetectOptions {
    pub min_face_size: Option<f64>,
    pub factor: Option<f64>,
    pub thresholds: Option<Vec<f64>>,
}

/// Faces of a batch, flat: `counts[i]` faces for image i, each 15 floats in `values`
/// (x1, y1, x2, y2, score, then 5 × (x, y) landmarks), images in order.
#[napi(object)]
pub struct BindingDetections {
    pub counts: Vec<u32>,
    pub values: Float32Array,
}

#[napi]
pub struct BindingDetector {
    worker: Arc<Worker>,
}

/// Loads MTCNN weights (safetensors) on `device` and resolves to a `BindingDetector`.
#[napi(ts_return_type = "Promise<BindingDetector>")]
pub fn load_detector(
    env: &Env,
    weights: String,
    device: Option<String>,
    threads: Option<f64>,
) -> Result<Object<'_>> {
    let device = facenet::parse_device(device.as_deref().unwrap_or("cpu")).map_err(to_js)?;
    let threads = match threads {
        Some(value) => thread_count(value)?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS)),
    };
    let worker = Arc::new(Worker::spawn("facenet-mtcnn", threads)?);
    let (deferred, promise): (Deferred<BindingDetector>, Object) =
        env.create_deferred().or_code()?;
    let handle = Arc::clone(&worker);
    worker.run(
        deferred,
        move |state| {
            state.detector =
                Some(Mtcnn::load(std::path::Path::new(&weights), device).map_err(to_js)?);
            Ok(())
        },
        move |_env, ()| Ok(BindingDetector { worker: handle }),
    );
    Ok(promise)
}

fn parse_options(options: Option<BindingDetectOptions>) -> Result<DetectOptions> {
    let mut out = DetectOptions::default();
    if let Some(o) = options {
        if let Some(v) = o.min_face_size {
            out.min_face_size = v;
        }
        if let Some(v) = o.factor {
            out.factor = v;
        }
        if let Some(t) = o.thresholds {
            out.thresholds = t
                .try_into()
                .map_err(|_| error::invalid("thresholds must be 3 numbers"))?;
        }
    }
    Ok(out)
}

#[napi]
impl BindingDetector {
    /// Detects faces in N×H×W×3 RGB pixels (uint8, or float32 in 0..255).
    #[napi(ts_return_type = "Promise<BindingDetections>")]
    pub fn detect<'env>(
        &self,
        env: &'env Env,
        pixels: Either<Uint8Array, Float32Array>,
        count: u32,
        height: u32,
        width: u32,
        options: Option<BindingDetectOptions>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<BindingDetections>, Object) =
            env.create_deferred().or_code()?;
        match parse_options(options)
            .and_then(|o| Ok((o, Pixels::new(pixels, count, height, width)?)))
        {
            Ok((options, pixels)) => self.worker.run(
                deferred,
                move |state| {
                    let detector = state.detector.as_ref().ok_or_else(error::disposed)?;
                    // Detections are plain numbers, never views of the pixels.
                    let faces = pixels.with_tensor(|images| {
                        // Float pixels (0..255, checked on the way in) become uint8 once, for
                        // the whole batch; uint8 pixels go in as they came.
                        let converted;
                        let images = if images.kind() == Kind::Uint8 {
                            images
                        } else {
                            converted =
                                images.f_to_kind(Kind::Uint8).map_err(|e| to_js(e.into()))?;
                            &converted
                        };
                        detector.detect_stacked(images, &options).map_err(to_js)
                    })?;
                    let mut counts = Vec::new();
                    let mut values = Vec::new();
                    for image in faces {
                        counts.push(image.len() as u32);
                        for f in image {
                            values.extend_from_slice(&f.bbox);
                            values.push(f.score);
                            for p in f.landmarks {
                                values.extend_from_slice(&p);
                            }
                        }
                    }
                    Ok((counts, values))
                },
                |_env, (counts, values)| {
                    Ok(BindingDetections {
                        counts,
                        values: Float32Array::new(values),
                    })
                },
            ),
            Err(error) => reject(deferred, error),
        }
        Ok(promise)
    }

    #[napi]
    pub fn dispose(&self) {
        self.worker.dispose();
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.worker.is_disposed()
    }
}
