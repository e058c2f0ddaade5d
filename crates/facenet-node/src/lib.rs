//! Node.js binding of the `facenet` core. Only conversion and error mapping live here;
//! the TypeScript layer in `src/` is the public API, and these `Binding*` names never
//! leak into it.

// napi-derive registers exports only outside `cfg(test)`, so the test build of this cdylib
// sees every exported item as unused.
#![cfg_attr(test, allow(dead_code))]

mod align;
mod detect;
mod error;
mod mining;
mod options;
mod packed;
mod pixels;
mod train;
mod worker;

use crate::error::{OrNapiCode, Result};
use error::{invalid, to_js};
use facenet::model::TinyConfig;
use facenet::{FaceNet, ModelConfig};
use napi::bindgen_prelude::{Either, Float32Array, Object, Uint8Array};
use napi::Env;
use napi_derive::napi;
use options::{BindingArch, BindingNormalization, BindingPrecision};
use pixels::Pixels;
use std::collections::HashMap;
use std::sync::Arc;
use worker::{reject, Deferred, Worker};

#[napi(object)]
pub struct BindingCreateOptions {
    pub arch: BindingArch,
    pub embedding_dim: u32,
    pub seed: i64,
    pub device: String,
    pub normalization: BindingNormalization,
    /// libtorch intra-op threads on this model's worker.
    pub threads: u32,
    /// `tiny` only: channels per stage and the input size (defaults 32,64,128,256 at 64×64).
    pub tiny_widths: Option<Vec<u32>>,
    pub tiny_input_height: Option<u32>,
    pub tiny_input_width: Option<u32>,
}

#[napi(object)]
#[derive(Clone)]
pub struct BindingModelInfo {
    pub arch: BindingArch,
    pub embedding_dim: u32,
    pub input_height: u32,
    pub input_width: u32,
    pub device: String,
    pub normalization: BindingNormalization,
    pub parameter_count: f64,
    /// `tiny`'s channels per stage; absent for the other archs.
    pub tiny_widths: Option<Vec<u32>>,
}

#[napi]
pub struct BindingModel {
    worker: Arc<Worker>,
    info: BindingModelInfo,
    /// Metadata the weights file carried besides the library's own keys.
    metadata: HashMap<String, String>,
}

fn model_info(model: &FaceNet) -> BindingModelInfo {
    let config = model.config();
    let input = model.input_size();
    BindingModelInfo {
        arch: config.arch.into(),
        embedding_dim: config.embedding_dim as u32,
        input_height: input.height as u32,
        input_width: input.width as u32,
        device: facenet::device_name(model.device()),
        normalization: config.normalization.into(),
        parameter_count: model.parameter_count() as f64,
        tiny_widths: (config.arch == facenet::Arch::Tiny)
            .then(|| config.tiny.widths.iter().map(|&w| w as u32).collect()),
    }
}

fn parse_options(options: &BindingCreateOptions) -> Result<(ModelConfig, usize)> {
    if options.threads == 0 {
        return Err(invalid("threads must be at least 1, got 0"));
    }
    let config = ModelConfig {
        arch: options.arch.into(),
        embedding_dim: i64::from(options.embedding_dim),
        // Checked non-negative by the TS layer (check.ts's checkSeed) before it gets here;
        // the packed loader's seed, a double, is checked again in packed.rs.
        seed: options.seed as u64,
        device: facenet::parse_device(&options.device).map_err(to_js)?,
        normalization: options.normalization.into(),
        tiny: tiny_config(options),
        dlib: Default::default(),
    };
    Ok((config, options.threads as usize))
}

fn tiny_config(options: &BindingCreateOptions) -> TinyConfig {
    let mut tiny = TinyConfig::default();
    if let Some(widths) = &options.tiny_widths {
        tiny.widths = widths.iter().map(|&w| i64::from(w)).collect();
    }
    if let Some(height) = options.tiny_input_height {
        tiny.input.height = i64::from(height);
    }
    if let Some(width) = options.tiny_input_width {
        tiny.input.width = i64::from(width);
    }
    tiny
}

/// Builds a model on a new worker thread; resolves to a `BindingModel`.
#[napi(ts_return_type = "Promise<BindingModel>")]
pub fn create_model(env: &Env, options: BindingCreateOptions) -> Result<Object<'_>> {
    let (config, threads) = parse_options(&options)?;
    let name = format!("facenet-{}", config.arch.name());
    start_model(env, &name, threads, move || {
        FaceNet::new(config).map(|model| (model, HashMap::new()))
    })
}

/// Starts a worker thread, builds the model on it with `build`, and resolves to the
/// `BindingModel` that owns that worker. Shared by `createModel` and `loadModel`.
fn start_model<'env, B>(
    env: &'env Env,
    thread_name: &str,
    threads: usize,
    build: B,
) -> Result<Object<'env>>
where
    B: FnOnce() -> facenet::Result<(FaceNet, HashMap<String, String>)> + Send + 'static,
{
    let worker = Arc::new(Worker::spawn(thread_name, threads)?);
    let (deferred, promise): (Deferred<BindingModel>, Object) = env.create_deferred().or_code()?;
    let handle = Arc::clone(&worker);
    worker.run(
        deferred,
        move |state| {
            let (model, metadata) = build().map_err(to_js)?;
            let info = model_info(&model);
            state.model = Some(model);
            Ok((info, metadata))
        },
        move |_env, (info, metadata)| {
            Ok(BindingModel {
                worker: handle,
                info,
                metadata,
            })
        },
    );
    Ok(promise)
}

#[napi(object)]
pub struct BindingLoadOptions {
    pub path: String,
    pub device: String,
    pub threads: u32,
    /// When set, the file must hold this arch.
    pub arch: Option<BindingArch>,
}

/// Loads a model from a safetensors file on a new worker thread; resolves to a
/// `BindingModel`.
#[napi(ts_return_type = "Promise<BindingModel>")]
pub fn load_model(env: &Env, options: BindingLoadOptions) -> Result<Object<'_>> {
    if options.threads == 0 {
        return Err(invalid("threads must be at least 1, got 0"));
    }
    let device = facenet::parse_device(&options.device).map_err(to_js)?;
    let arch = options.arch.map(Into::into);
    let path = std::path::PathBuf::from(options.path);
    start_model(env, "facenet-load", options.threads as usize, move || {
        facenet::weights::load_with_metadata(&path, device, arch)
    })
}

#[napi(object)]
pub struct BindingLayerRow {
    pub name: String,
    pub kind: String,
    pub output: Vec<u32>,
    pub params: f64,
    pub macs: f64,
}

#[napi(object)]
pub struct BindingSummary {
    pub arch: BindingArch,
    pub embedding_dim: u32,
    pub input_height: u32,
    pub input_width: u32,
    pub parameters: f64,
    pub multiply_adds: f64,
    pub layers: Vec<BindingLayerRow>,
}

fn binding_summary(summary: facenet::model::Summary) -> BindingSummary {
    BindingSummary {
        arch: summary.arch.into(),
        embedding_dim: summary.embedding_dim as u32,
        input_height: summary.input.height as u32,
        input_width: summary.input.width as u32,
        parameters: summary.parameters as f64,
        multiply_adds: summary.multiply_adds as f64,
        layers: summary
            .layers
            .into_iter()
            .map(|row| BindingLayerRow {
                name: row.name,
                kind: row.kind,
                output: row.output.iter().map(|&d| d as u32).collect(),
                params: row.params as f64,
                macs: row.macs as f64,
            })
            .collect(),
    }
}

#[napi]
impl BindingModel {
    /// Parameter count, multiply-adds per image and the layer table.
    #[napi(ts_return_type = "Promise<BindingSummary>")]
    pub fn summary<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<BindingSummary>, Object) =
            env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            |state| {
                let model = state.model.as_ref().ok_or_else(error::disposed)?;
                Ok(model.summary())
            },
            |_env, summary| Ok(binding_summary(summary)),
        );
        Ok(promise)
    }

    /// Writes the weights and their metadata (plus `metadata`, whose keys the TS layer
    /// keeps clear of the library's own) to `path` as safetensors, atomically.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save<'env>(
        &self,
        env: &'env Env,
        path: String,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<()>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            move |state| {
                let model = state.model.as_ref().ok_or_else(error::disposed)?;
                let path = std::path::Path::new(&path);
                facenet::weights::save_with(model, &[], metadata.unwrap_or_default(), path)
                    .map_err(to_js)
            },
            |_env, ()| Ok(()),
        );
        Ok(promise)
    }

    /// SHA-256 (hex) of the weights, running statistics included; metadata left out.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn weights_digest<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<String>, Object) = env.create_deferred().or_code()?;
        self.worker.run(
            deferred,
            |state| {
                let model = state.model.as_ref().ok_or_else(error::disposed)?;
                facenet::weights::digest(model).map_err(to_js)
            },
            |_env, digest| Ok(digest),
        );
        Ok(promise)
    }

    #[napi]
    pub fn info(&self) -> BindingModelInfo {
        self.info.clone()
    }

    /// Extra metadata of the file the model was loaded from; empty for a created model.
    #[napi]
    pub fn metadata(&self) -> HashMap<String, String> {
        self.metadata.clone()
    }

    /// Embeds N×H×W×3 pixels (uint8, or float32 in 0..255). The worker reads the pixels
    /// where JS put them (see `pixels.rs`); their first copy is the network input, made
    /// on the worker in the network's dtype on the model's device.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn embed<'env>(
        &self,
        env: &'env Env,
        pixels: Either<Uint8Array, Float32Array>,
        count: u32,
        height: u32,
        width: u32,
        precision: Option<BindingPrecision>,
    ) -> Result<Object<'env>> {
        let (deferred, promise): (Deferred<Float32Array>, Object) =
            env.create_deferred().or_code()?;
        let precision = precision.map_or_else(Default::default, Into::into);
        match Pixels::new(pixels, count, height, width) {
            Ok(pixels) => self.worker.run(
                deferred,
                move |state| {
                    let model = state.model.as_ref().ok_or_else(error::disposed)?;
                    // The embeddings are computed, never a view of the input, so they may
                    // outlive the pixels.
                    let embeddings = pixels
                        .with_tensor(|images| model.embed_with(images, precision).map_err(to_js))?;
                    // The Vec becomes the Float32Array's memory as it is (an external
                    // ArrayBuffer), so this is the result's only copy: N×D floats.
                    Vec::<f32>::try_from(embeddings.flatten(0, -1)).map_err(|e| to_js(e.into()))
                },
                |_env, values| Ok(Float32Array::new(values)),
            ),
            Err(error) => reject(deferred, error),
        }
        Ok(promise)
    }

    /// Frees the model's memory once the call running now returns; queued calls reject
    /// with ERR_DISPOSED. Never blocks.
    #[napi]
    pub fn dispose(&self) {
        self.worker.dispose();
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.worker.is_disposed()
    }
}

#[napi(object)]
pub struct BindingDevices {
    pub cuda_available: bool,
    pub cuda_device_count: u32,
    pub cudnn_available: bool,
    pub cpu_threads: u32,
}

#[napi]
pub fn devices() -> BindingDevices {
    let info = facenet::devices();
    BindingDevices {
        cuda_available: info.cuda_available,
        cuda_device_count: info.cuda_device_count as u32,
        cudnn_available: info.cudnn_available,
        cpu_threads: info.cpu_threads as u32,
    }
}

#[napi]
pub fn libtorch_version() -> &'static str {
    facenet::LIBTORCH_VERSION
}

extern "C" {
    /// POSIX `_exit(2)`: ends the process without running `atexit` handlers or C++ static
    /// destructors.
    fn _exit(status: std::os::raw::c_int) -> !;
}

/// Ends the process at once with `code`, for a second Ctrl-C. `process.exit` runs
/// libtorch's static destructors while a worker thread may still be inside a forward or
/// backward pass, which segfaults (exit 139) instead of exiting with the code asked for.
/// Files are left as a SIGKILL leaves them, which every writer here is built to survive
/// (temp file, then rename).
#[napi]
pub fn exit_immediately(code: i32) {
    // SAFETY: `_exit` takes any status and never returns.
    unsafe { _exit(code) }
}
