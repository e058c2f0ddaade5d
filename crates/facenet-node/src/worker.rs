//! One dedicated OS thread per model. It owns the weights (a `Tensor` is `Send` but not
//! `Sync`) and runs every long operation, so neither the JS thread nor libuv's small pool
//! (which sharp and fs need) is ever blocked by a forward or backward pass.

use crate::error::{coded, disposed, from_panic, invalid, rejection, Error, Result};
use facenet::FaceNet;
use napi::bindgen_prelude::ToNapiValue;
use napi::{Env, JsDeferred};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::{self, JoinHandle, ThreadId};

/// What lives on the worker thread.
#[derive(Default)]
pub struct WorkerState {
    pub model: Option<FaceNet>,
    /// Optimizer and loss settings once training is configured.
    pub training: Option<facenet::train::TrainState>,
    /// The MTCNN of a `BindingDetector`.
    pub detector: Option<facenet::detect::Mtcnn>,
}

/// The most intra-op threads a worker may ask for, as `FaceNet.create` documents.
pub const MAX_THREADS: usize = 1024;

/// A thread count from JS, where `-1` or `1.5` must be refused rather than wrapped or
/// truncated by a `u32` conversion.
pub fn thread_count(value: f64) -> Result<usize> {
    if value.fract() != 0.0 || !(1.0..=MAX_THREADS as f64).contains(&value) {
        return Err(invalid(format!(
            "threads must be a whole number from 1 to {MAX_THREADS}, got {value}"
        )));
    }
    Ok(value as usize)
}

type Job = Box<dyn FnOnce(&mut WorkerState) + Send>;

/// A promise settled from the worker thread.
pub type Deferred<T> = JsDeferred<T, Box<dyn FnOnce(Env) -> napi::Result<T> + Send>>;

/// Rejects `deferred` with `error`, its `code` intact (see [`rejection`]).
pub fn reject<V: ToNapiValue + 'static>(deferred: Deferred<V>, error: Error) {
    deferred.resolve(Box::new(move |env| Err(rejection(env, error))))
}

/// Settles `deferred` on the JS thread with `to_js(value)`, or rejects with its error.
pub fn resolve<T, V, C>(deferred: Deferred<V>, value: T, to_js: C)
where
    T: Send + 'static,
    V: ToNapiValue + 'static,
    C: FnOnce(Env, T) -> Result<V> + Send + 'static,
{
    deferred.resolve(Box::new(move |env| {
        to_js(env, value).map_err(|error| rejection(env, error))
    }))
}

pub struct Worker {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    disposed: AtomicBool,
}

impl Worker {
    /// Starts the thread. `threads` caps libtorch's intra-op parallelism; the cap is set
    /// on the worker itself because OpenMP's setting is per calling thread. A count
    /// outside 1..=[`MAX_THREADS`] is refused here: libtorch's `set_num_threads` throws on
    /// one below 1, and a panic on the worker before its loop would leave every promise
    /// sent to it unsettled.
    pub fn spawn(name: &str, threads: usize) -> Result<Self> {
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(invalid(format!(
                "threads must be a whole number from 1 to {MAX_THREADS}, got {threads}"
            )));
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Bounded above, so the cast cannot wrap.
                tch::set_num_threads(threads as i32);
                let mut state = WorkerState::default();
                for job in receiver {
                    job(&mut state);
                }
                // The model (and its GPU memory) is dropped here, on the thread that made it.
            })
            .map_err(|e| coded("ERR_TORCH", format!("could not start a worker thread: {e}")))?;
        let thread_id = thread.thread().id();
        Ok(Self {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            thread_id,
            disposed: AtomicBool::new(false),
        })
    }

    pub fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::Acquire)
    }

    /// Runs `work` on the worker and settles `deferred` with its result, converted to JS
    /// by `to_js` on the JS thread. A panic in `work` rejects instead of aborting, and a
    /// call that reaches the worker after `dispose()` rejects with ERR_DISPOSED.
    pub fn run<T, V, W, C>(self: &std::sync::Arc<Self>, deferred: Deferred<V>, work: W, to_js: C)
    where
        T: Send + 'static,
        V: ToNapiValue + 'static,
        W: FnOnce(&mut WorkerState) -> Result<T> + Send + 'static,
        C: FnOnce(Env, T) -> Result<V> + Send + 'static,
    {
        let worker = std::sync::Arc::clone(self);
        let job: Job = Box::new(move |state| {
            if worker.is_disposed() {
                reject(deferred, disposed());
                return;
            }
            match catch_unwind(AssertUnwindSafe(|| work(state))) {
                Ok(Ok(value)) => resolve(deferred, value, to_js),
                Ok(Err(error)) => reject(deferred, error),
                Err(payload) => reject(deferred, from_panic(payload)),
            }
        });
        let unsent = match self.sender.lock() {
            Ok(sender) => match sender.as_ref() {
                Some(sender) => sender.send(job).err().map(|e| e.0),
                None => Some(job),
            },
            Err(_) => Some(job),
        };
        // The channel only closes in dispose(), after the flag is set, so running the job
        // here rejects it with ERR_DISPOSED without touching any model.
        if let Some(job) = unsent {
            job(&mut WorkerState::default());
        }
    }

    /// Stops accepting work. Jobs already queued reject with ERR_DISPOSED; the model is
    /// freed on the worker as soon as the job running now returns. Does not block.
    pub fn dispose(&self) {
        self.disposed.store(true, Ordering::Release);
        if let Ok(mut sender) = self.sender.lock() {
            if let Some(sender) = sender.as_ref() {
                let _ = sender.send(Box::new(|state: &mut WorkerState| {
                    *state = WorkerState::default()
                }));
            }
            sender.take();
        }
    }

    /// Disposes and waits for the thread to end: required before process exit, where a
    /// CUDA context torn down under a running thread can abort the process.
    pub fn join(&self) {
        self.dispose();
        if thread::current().id() == self.thread_id {
            return;
        }
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = handle.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.join();
    }
}
