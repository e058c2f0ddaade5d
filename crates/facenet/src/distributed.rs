//! Process groups for data-parallel training, over PyTorch's own c10d (cpp/c10d.cpp): a
//! TCPStore rendezvous at MASTER_ADDR:MASTER_PORT, hosted by rank 0, then a Gloo group
//! for CPU tensors, the pair torch.distributed builds for `init_process_group("gloo")`.
//!
//! Every failure comes back as [`Error::Distributed`] with a [`DistributedFailure`] code
//! and a message that names the address and the ranks. When a collective fails, the
//! surviving ranks tell one another through the store which of them saw it, so that the
//! message can name the rank that is gone rather than a socket address.

use crate::error::{DistributedFailure, Error, Result};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

#[repr(C)]
struct RawGroup {
    _opaque: [u8; 0],
}

type Handle = *const C_tensor;

extern "C" {
    fn facenet_free_error(message: *mut c_char);
    fn facenet_group_new(
        host: *const c_char,
        port: u16,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn facenet_group_connect(
        group: *mut RawGroup,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
        interface: *const c_char,
        bind: *const c_char,
    ) -> *mut c_char;
    fn facenet_group_free(group: *mut RawGroup);
    fn facenet_group_all_reduce_(
        group: *mut RawGroup,
        xs: *const Handle,
        n: usize,
        op: i32,
    ) -> *mut c_char;
    fn facenet_group_broadcast_(
        group: *mut RawGroup,
        xs: *const Handle,
        n: usize,
        root: i32,
    ) -> *mut c_char;
    fn facenet_group_all_gather(
        group: *mut RawGroup,
        x: Handle,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn facenet_group_barrier(group: *mut RawGroup) -> *mut c_char;
    fn facenet_group_store_set(
        group: *mut RawGroup,
        key: *const c_char,
        value: *const c_char,
    ) -> *mut c_char;
    fn facenet_group_store_check(
        group: *mut RawGroup,
        key: *const c_char,
        present: *mut bool,
    ) -> *mut c_char;
}

/// Where and how a rank joins its group: torchrun's variables (RANK, WORLD_SIZE,
/// MASTER_ADDR, MASTER_PORT) in a struct.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendezvous {
    pub master_addr: String,
    pub master_port: u16,
    pub rank: i64,
    pub world_size: i64,
    /// How long the rendezvous and each collective may wait for the other ranks.
    pub timeout: Duration,
    /// The network interface Gloo binds to (torch's GLOO_SOCKET_IFNAME); by default the
    /// loopback for a loopback master, else the address this machine's hostname resolves to.
    pub interface: Option<String>,
}

impl Rendezvous {
    pub fn validate(&self) -> Result<()> {
        if self.world_size < 1 || self.world_size > i64::from(i32::MAX) {
            return Err(Error::invalid(format!(
                "the world size must be at least 1, got {}",
                self.world_size
            )));
        }
        if self.rank < 0 || self.rank >= self.world_size {
            return Err(Error::invalid(format!(
                "the rank must be in 0..{} (the world size), got {}",
                self.world_size, self.rank
            )));
        }
        if self.master_addr.is_empty() || self.master_addr.contains('\0') {
            return Err(Error::invalid(format!(
                "MASTER_ADDR must be a host name or address, got {:?}",
                self.master_addr
            )));
        }
        if self.master_port == 0 {
            return Err(Error::invalid(
                "MASTER_PORT must be a port in 1..65535, got 0",
            ));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("the distributed timeout must be positive"));
        }
        if let Some(interface) = &self.interface {
            if interface.is_empty() || interface.contains('\0') {
                return Err(Error::invalid(format!(
                    "the network interface must be a name such as eth0, got {interface:?}"
                )));
            }
        }
        Ok(())
    }

    fn address(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }

    fn is_loopback(&self) -> bool {
        let host = self.master_addr.as_str();
        host == "localhost" || host == "::1" || host.starts_with("127.")
    }
}

/// The shim's error: the c10 exception class and the message.
struct ShimError {
    kind: String,
    message: String,
}

impl ShimError {
    fn is_timeout(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        m.contains("timed out") || m.contains("timeout")
    }
}

fn check(message: *mut c_char) -> std::result::Result<(), ShimError> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string from strdup, freed here once.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { facenet_free_error(message) };
    let (kind, message) = text.split_once('\n').unwrap_or(("Error", text.as_str()));
    Err(ShimError {
        kind: kind.to_owned(),
        message: message.trim_end().to_owned(),
    })
}

fn c_string(what: &str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|_| Error::invalid(format!("{what} contains a NUL byte")))
}

/// One rank's membership of a process group. Dropping it closes its connections, which
/// the other ranks see as this rank being gone.
pub struct ProcessGroup {
    raw: *mut RawGroup,
    rendezvous: Rendezvous,
}

// SAFETY: c10d's store and process group are reference-counted objects that may be used
// from any thread; this handle is used by one thread at a time (&mut-free calls are
// serialized by the worker that owns it).
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: raw came from facenet_group_new and is freed once.
        unsafe { facenet_group_free(self.raw) }
    }
}

/// How long the ranks that saw a collective fail wait for one another before naming the
/// ones that did not report as lost.
const REPORT_GRACE: Duration = Duration::from_secs(3);

impl ProcessGroup {
    /// Joins the group: rank 0 hosts the rendezvous and waits for the others, every rank
    /// then connects to every other. Returns when all `world_size` ranks have joined.
    pub fn join(rendezvous: &Rendezvous) -> Result<Self> {
        rendezvous.validate()?;
        let host = c_string("MASTER_ADDR", &rendezvous.master_addr)?;
        let interface = c_string(
            "the network interface",
            rendezvous.interface.as_deref().unwrap_or(""),
        )?;
        // Gloo must bind to an address the other ranks reach: on one machine, the loopback
        // (the hostname may resolve to an address that is not configured).
        let bind = c_string(
            "the bind address",
            if rendezvous.is_loopback() {
                "127.0.0.1"
            } else {
                ""
            },
        )?;
        let timeout_ms = rendezvous.timeout.as_millis().min(i64::MAX as u128) as i64;
        let (rank, world_size) = (rendezvous.rank as i32, rendezvous.world_size as i32);
        let mut raw = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; raw receives an owned group on success.
        check(unsafe {
            facenet_group_new(
                host.as_ptr(),
                rendezvous.master_port,
                rank,
                world_size,
                timeout_ms,
                &mut raw,
            )
        })
        .map_err(|e| join_error(rendezvous, e))?;
        // Owned from here: dropped (freed) on the error below too.
        let group = Self {
            raw,
            rendezvous: rendezvous.clone(),
        };
        // SAFETY: raw is a live group; the strings outlive the call.
        check(unsafe {
            facenet_group_connect(
                group.raw,
                rank,
                world_size,
                timeout_ms,
                interface.as_ptr(),
                bind.as_ptr(),
            )
        })
        .map_err(|e| connect_error(rendezvous, e))?;
        Ok(group)
    }

    pub fn rank(&self) -> i64 {
        self.rendezvous.rank
    }

    pub fn world_size(&self) -> i64 {
        self.rendezvous.world_size
    }

    pub fn rendezvous(&self) -> &Rendezvous {
        &self.rendezvous
    }

    /// Sums each tensor across ranks, in place (contiguous CPU tensors).
    pub fn all_reduce_sum_(&self, tensors: &[Tensor]) -> Result<()> {
        self.reduce(tensors, 0, "all-reduce (sum)")
    }

    /// Takes each element's maximum across ranks, in place.
    pub fn all_reduce_max_(&self, tensors: &[Tensor]) -> Result<()> {
        self.reduce(tensors, 1, "all-reduce (max)")
    }

    fn reduce(&self, tensors: &[Tensor], op: i32, what: &str) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        check_cpu(tensors, what)?;
        let handles: Vec<Handle> = tensors.iter().map(Tensor::as_ptr).collect();
        // SAFETY: the handles are valid for the call.
        let result = check(unsafe {
            facenet_group_all_reduce_(self.raw, handles.as_ptr(), handles.len(), op)
        });
        result.map_err(|e| self.collective_error(what, e))
    }

    /// Overwrites each tensor, on every rank, with rank `root`'s.
    pub fn broadcast_(&self, tensors: &[Tensor], root: i64) -> Result<()> {
        if root < 0 || root >= self.world_size() {
            return Err(Error::invalid(format!(
                "the broadcast root must be a rank in 0..{}, got {root}",
                self.world_size()
            )));
        }
        if tensors.is_empty() {
            return Ok(());
        }
        check_cpu(tensors, "broadcast")?;
        let handles: Vec<Handle> = tensors.iter().map(Tensor::as_ptr).collect();
        // SAFETY: the handles are valid for the call.
        let result = check(unsafe {
            facenet_group_broadcast_(self.raw, handles.as_ptr(), handles.len(), root as i32)
        });
        result.map_err(|e| self.collective_error("broadcast", e))
    }

    /// Every rank's `x` (the same shape on each), concatenated along dim 0 in rank order.
    /// No gradient flows through the result.
    pub fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        check_cpu(std::slice::from_ref(x), "all-gather")?;
        let _no_grad = tch::no_grad_guard();
        let x = x.f_detach()?;
        let mut out = std::ptr::null_mut();
        // SAFETY: x is valid for the call; out receives an owned tensor on success.
        let result = check(unsafe { facenet_group_all_gather(self.raw, x.as_ptr(), &mut out) });
        result.map_err(|e| self.collective_error("all-gather", e))?;
        // SAFETY: allocated with `new` by the shim, freed by tch's Drop.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: raw is a live group.
        let result = check(unsafe { facenet_group_barrier(self.raw) });
        result.map_err(|e| self.collective_error("barrier", e))
    }

    fn store_set(&self, key: &str, value: &str) -> std::result::Result<(), ShimError> {
        let (key, value) = (CString::new(key).unwrap(), CString::new(value).unwrap());
        // SAFETY: the strings outlive the call.
        check(unsafe { facenet_group_store_set(self.raw, key.as_ptr(), value.as_ptr()) })
    }

    fn store_has(&self, key: &str) -> std::result::Result<bool, ShimError> {
        let key = CString::new(key).unwrap();
        let mut present = false;
        // SAFETY: key outlives the call; present is a valid out-pointer.
        check(unsafe { facenet_group_store_check(self.raw, key.as_ptr(), &mut present) })?;
        Ok(present)
    }

    /// The error of a failed collective, naming the rank(s) that are gone. Each rank that
    /// sees the failure reports itself in the store, then waits up to [`REPORT_GRACE`] for
    /// the others: those that never report are the lost ones. When the store itself is
    /// gone, so is rank 0, which hosted it.
    fn collective_error(&self, what: &str, error: ShimError) -> Error {
        let rank = self.rank();
        let address = self.rendezvous.address();
        let prefix = format!("rank {rank} of {}: {what} failed", self.world_size());
        if error.kind == "Error" && !is_network(&error.message) && !error.is_timeout() {
            // Not a failure of the peers: c10d refused the call itself.
            return Error::Distributed(
                DistributedFailure::Collective,
                format!("{prefix}: {}", error.message),
            );
        }
        if self.store_set(&report_key(rank), "failed").is_err() {
            return Error::Distributed(
                DistributedFailure::PeerLost,
                format!(
                    "{prefix}: lost rank 0 (it hosted the rendezvous at {address}, which no longer answers): {}",
                    error.message
                ),
            );
        }
        let deadline = Instant::now() + REPORT_GRACE;
        let missing = loop {
            let missing: Vec<i64> = (0..self.world_size())
                .filter(|&r| r != rank && !matches!(self.store_has(&report_key(r)), Ok(true)))
                .collect();
            if missing.is_empty() || Instant::now() >= deadline {
                break missing;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if missing.is_empty() || (error.is_timeout() && !is_network(&error.message)) {
            let failure = if error.is_timeout() {
                DistributedFailure::Timeout
            } else {
                DistributedFailure::Collective
            };
            return Error::Distributed(
                failure,
                format!(
                    "{prefix} after waiting up to {} s for the other ranks: {}",
                    self.rendezvous.timeout.as_secs_f64(),
                    error.message
                ),
            );
        }
        let names: Vec<String> = missing.iter().map(i64::to_string).collect();
        let lost = if names.len() == 1 {
            format!("lost rank {}", names[0])
        } else {
            format!("lost ranks {}", names.join(", "))
        };
        Error::Distributed(
            DistributedFailure::PeerLost,
            format!(
                "{prefix}: {lost} (its process is gone; group at {address}): {}",
                error.message
            ),
        )
    }
}

fn report_key(rank: i64) -> String {
    format!("facenet/failed/{rank}")
}

/// Messages of a connection that broke or never opened.
fn is_network(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection",
        "broken pipe",
        "reset by peer",
        "closed by peer",
        "econnrefused",
        "epipe",
        "socket",
        "read error",
        "write error",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

fn join_error(rendezvous: &Rendezvous, error: ShimError) -> Error {
    let address = rendezvous.address();
    let (rank, world) = (rendezvous.rank, rendezvous.world_size);
    let seconds = rendezvous.timeout.as_secs_f64();
    let lower = error.message.to_ascii_lowercase();
    let (failure, sentence) = if lower.contains("eaddrinuse")
        || lower.contains("address already in use")
    {
        (
            DistributedFailure::AddressInUse,
            format!("rank 0 cannot host the rendezvous at {address}: the port is in use (choose another MASTER_PORT)"),
        )
    } else if rank == 0 && error.is_timeout() {
        (
            DistributedFailure::Timeout,
            format!("rank 0 waited {seconds} s at {address} for the {world} ranks to join"),
        )
    } else if rank != 0
        && (error.kind == "DistNetworkError" || is_network(&error.message) || error.is_timeout())
    {
        (
            DistributedFailure::Unreachable,
            format!("rank {rank} of {world} cannot reach MASTER_ADDR {address} (rank 0's rendezvous) within {seconds} s"),
        )
    } else if error.is_timeout() {
        (
            DistributedFailure::Timeout,
            format!(
                "rank {rank} of {world}: the group at {address} did not form within {seconds} s"
            ),
        )
    } else {
        (
            DistributedFailure::Collective,
            format!("rank {rank} of {world} could not join the group at {address}"),
        )
    };
    Error::Distributed(failure, format!("{sentence}: {}", error.message))
}

/// Every rank reached the rendezvous, but the ranks could not connect to one another.
fn connect_error(rendezvous: &Rendezvous, error: ShimError) -> Error {
    let failure = if error.is_timeout() {
        DistributedFailure::Timeout
    } else {
        DistributedFailure::Unreachable
    };
    let bound = match &rendezvous.interface {
        Some(interface) => format!("the interface {interface}"),
        None if rendezvous.is_loopback() => "127.0.0.1".to_owned(),
        None => "the address this machine's hostname resolves to".to_owned(),
    };
    Error::Distributed(
        failure,
        format!(
            "rank {} of {} reached the rendezvous at {} but could not connect to the other ranks (Gloo binds to {bound}; GLOO_SOCKET_IFNAME picks another interface): {}",
            rendezvous.rank,
            rendezvous.world_size,
            rendezvous.address(),
            error.message
        ),
    )
}

fn check_cpu(tensors: &[Tensor], what: &str) -> Result<()> {
    if let Some(t) = tensors.iter().find(|t| t.device() != Device::Cpu) {
        return Err(Error::invalid(format!(
            "the Gloo process group runs {what} on CPU tensors only, got one on {:?} (NCCL, for CUDA, is not built into this version)",
            t.device()
        )));
    }
    Ok(())
}

/// The default bucket of the gradient all-reduce, as DDP's `bucket_cap_mb` (25 MB).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Sums `grads` across ranks in buckets of up to `bucket_bytes`: each bucket is flattened
/// into one contiguous tensor, reduced in one collective and copied back, so a network
/// of hundreds of small tensors costs a few collectives rather than hundreds.
pub fn all_reduce_buckets_(
    group: &ProcessGroup,
    grads: &[Tensor],
    bucket_bytes: usize,
) -> Result<()> {
    let _no_grad = tch::no_grad_guard();
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < grads.len() && (end == start || bytes + byte_size(&grads[end]) <= bucket_bytes)
        {
            bytes += byte_size(&grads[end]);
            end += 1;
        }
        let bucket = &grads[start..end];
        let flat = Tensor::f_cat(
            &bucket
                .iter()
                .map(|g| g.f_reshape([-1]))
                .collect::<Result<Vec<_>, _>>()?,
            0,
        )?;
        group.all_reduce_sum_(std::slice::from_ref(&flat))?;
        let mut offset = 0;
        for grad in bucket {
            let n = grad.numel() as i64;
            grad.shallow_clone()
                .f_copy_(&flat.f_narrow(0, offset, n)?.f_view_as(grad)?)?;
            offset += n;
        }
        start = end;
    }
    Ok(())
}

fn byte_size(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use tch::Kind;

    /// A port nothing listens on now (the OS picks it), for one test's rendezvous.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub fn local(port: u16, rank: i64, world_size: i64, timeout_s: u64) -> Rendezvous {
        Rendezvous {
            master_addr: "127.0.0.1".into(),
            master_port: port,
            rank,
            world_size,
            timeout: Duration::from_secs(timeout_s),
            interface: None,
        }
    }

    /// Runs the test named `worker` of this binary in another process as rank 1 (the
    /// worker reads FACENET_TEST_PORT), while the caller takes rank 0.
    pub fn spawn_rank1(worker: &str, port: u16, extra: &[(&str, &str)]) -> std::process::Child {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                worker,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ])
            .env("FACENET_TEST_PORT", port.to_string())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            command.env(k, v);
        }
        command.spawn().unwrap()
    }

    /// The port of a rank-1 worker, or None when run as a plain test (then it returns).
    pub fn worker_port() -> Option<u16> {
        std::env::var("FACENET_TEST_PORT")
            .ok()
            .map(|p| p.parse().unwrap())
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// The collectives both ranks run, each checking the values it receives.
    fn collectives(rank: i64, port: u16) {
        let group = ProcessGroup::join(&local(port, rank, 2, 30)).unwrap();
        assert_eq!((group.rank(), group.world_size()), (rank, 2));
        let r = rank as f32;
        // Sum: [1, 2, 3] + r·10 on each rank.
        let x = Tensor::from_slice(&[1f32 + r * 10., 2. + r * 10., 3. + r * 10.]);
        let y = Tensor::from_slice(&[r; 2]).view([1, 2]);
        group
            .all_reduce_sum_(&[x.shallow_clone(), y.shallow_clone()])
            .unwrap();
        assert_eq!(values(&x), vec![12., 14., 16.]);
        assert_eq!(values(&y), vec![1., 1.]);
        let m = Tensor::from_slice(&[r, 5. - r]);
        group.all_reduce_max_(std::slice::from_ref(&m)).unwrap();
        assert_eq!(values(&m), vec![1., 5.]);
        // Broadcast from rank 1 this time: rank 0's value is overwritten.
        let b = Tensor::from_slice(&[r + 7.; 4]).view([2, 2]);
        group.broadcast_(std::slice::from_ref(&b), 1).unwrap();
        assert_eq!(values(&b), vec![8.; 4]);
        // All-gather, float and int64, in rank order.
        let g = Tensor::from_slice(&[r, r + 0.5, r, r + 0.5]).view([2, 2]);
        assert_eq!(
            values(&group.all_gather(&g).unwrap()),
            vec![0., 0.5, 0., 0.5, 1., 1.5, 1., 1.5]
        );
        let labels = Tensor::from_slice(&[rank * 100, rank * 100 + 1]);
        let all = group.all_gather(&labels).unwrap();
        assert_eq!(all.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(&all).unwrap(), vec![0, 1, 100, 101]);
        // Buckets of 16 bytes: 3 collectives for these 5 tensors.
        let grads: Vec<Tensor> = (0..5)
            .map(|i| Tensor::from_slice(&[r + i as f32; 3]))
            .collect();
        all_reduce_buckets_(&group, &grads, 16).unwrap();
        for (i, grad) in grads.iter().enumerate() {
            assert_eq!(values(grad), vec![1. + 2. * i as f32; 3]);
        }
        group.barrier().unwrap();
    }

    #[test]
    #[ignore = "rank 1 of gloo_collectives_give_the_same_values_as_torch_distributed"]
    fn collectives_rank1() {
        if let Some(port) = worker_port() {
            collectives(1, port);
        }
    }

    #[test]
    fn gloo_collectives_give_the_same_values_as_torch_distributed() {
        let port = free_port();
        let mut child = spawn_rank1("distributed::tests::collectives_rank1", port, &[]);
        collectives(0, port);
        assert!(child.wait().unwrap().success(), "rank 1 failed");
    }

    #[test]
    #[ignore = "rank 1 of a_killed_rank_is_named_by_the_survivor"]
    fn killed_rank1() {
        if let Some(port) = worker_port() {
            let group = ProcessGroup::join(&local(port, 1, 2, 30)).unwrap();
            group.barrier().unwrap();
            // Dies the way SIGKILL does: no destructor, no goodbye.
            std::process::abort();
        }
    }

    #[test]
    fn a_killed_rank_is_named_by_the_survivor() {
        let port = free_port();
        let mut child = spawn_rank1("distributed::tests::killed_rank1", port, &[]);
        let group = ProcessGroup::join(&local(port, 0, 2, 30)).unwrap();
        group.barrier().unwrap();
        let _ = child.wait();
        let x = Tensor::from_slice(&[1f32]);
        let err = group.all_reduce_sum_(std::slice::from_ref(&x)).unwrap_err();
        assert_eq!(err.code(), "ERR_DIST_PEER_LOST", "{err}");
        assert!(err.to_string().contains("lost rank 1"), "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_master_is_named_with_its_address() {
        // Nothing listens on this port: rank 1 retries until its timeout.
        let port = free_port();
        let err = ProcessGroup::join(&local(port, 1, 2, 2)).err().unwrap();
        assert_eq!(err.code(), "ERR_DIST_UNREACHABLE", "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn a_taken_port_is_refused_to_rank_0() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = ProcessGroup::join(&local(port, 0, 2, 2)).err().unwrap();
        assert_eq!(err.code(), "ERR_DIST_ADDRESS_IN_USE", "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn rank_0_alone_times_out_waiting_for_the_others() {
        let err = ProcessGroup::join(&local(free_port(), 0, 2, 1))
            .err()
            .unwrap();
        assert_eq!(err.code(), "ERR_DIST_TIMEOUT", "{err}");
        assert!(err.to_string().contains("2 ranks"), "{err}");
    }

    #[test]
    fn an_interface_gloo_cannot_bind_is_named_after_the_rendezvous_succeeded() {
        let rendezvous = Rendezvous {
            interface: Some("nosuchnic0".into()),
            ..local(free_port(), 0, 1, 5)
        };
        let err = ProcessGroup::join(&rendezvous).err().unwrap();
        assert_eq!(err.code(), "ERR_DIST_UNREACHABLE", "{err}");
        let message = err.to_string();
        assert!(
            message.contains("reached the rendezvous at 127.0.0.1:"),
            "{message}"
        );
        assert!(message.contains("the interface nosuchnic0"), "{message}");
    }

    #[test]
    fn a_world_of_one_needs_no_peer_and_bad_settings_are_refused() {
        let group = ProcessGroup::join(&local(free_port(), 0, 1, 5)).unwrap();
        let x = Tensor::from_slice(&[3f32]);
        group.all_reduce_sum_(std::slice::from_ref(&x)).unwrap();
        assert_eq!(values(&x), vec![3.]);
        assert_eq!(values(&group.all_gather(&x).unwrap()), vec![3.]);
        let err = group.broadcast_(&[x], 1).unwrap_err();
        assert_eq!(err.code(), "ERR_INVALID_ARGUMENT");
        let err = ProcessGroup::join(&local(1, 2, 2, 5)).err().unwrap();
        assert!(err.to_string().contains("0..2"), "{err}");
        let err = ProcessGroup::join(&local(0, 0, 1, 5)).err().unwrap();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
    }
}
