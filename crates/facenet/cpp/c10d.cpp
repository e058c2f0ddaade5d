// PyTorch's own collective engine (c10d), which tch 0.24 does not wrap: a TCPStore
// rendezvous on MASTER_ADDR:MASTER_PORT (rank 0 hosts it), then a Gloo process group over
// it for CPU tensors. The same objects torch.distributed builds for
// init_process_group("gloo"), so a facenet-torch rank speaks the wire format of c10d.
//
// ProcessGroupGloo.hpp includes gloo's headers, which torch's wheel does not ship; they
// come from Debian's libgloo-dev (scripts/setup-libtorch.sh). This file only passes gloo
// devices around as shared_ptrs and calls c10d's virtual collectives, so no gloo type's
// layout is relied on; src/distributed.rs's tests check the values across processes.
//
// Every function returns nullptr, or an error that the caller frees with
// facenet_free_error: "<kind>\n<message>", the kind being the c10 exception class
// (DistNetworkError, DistStoreError, DistBackendError, Error) so that Rust can tell a
// network failure from a timeout without parsing C++ types.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <ATen/ops/cat.h>
#include <c10/util/Logging.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

using handle = at::Tensor*;

struct facenet_group {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

namespace {
char* error(const char* kind, const std::string& message) {
  std::string text = std::string(kind) + "\n" + message;
  return strdup(text.c_str());
}

template <typename F>
char* guarded(F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const c10::DistNetworkError& e) {
    return error("DistNetworkError", e.what_without_backtrace());
  } catch (const c10::DistStoreError& e) {
    return error("DistStoreError", e.what_without_backtrace());
  } catch (const c10::DistBackendError& e) {
    return error("DistBackendError", e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return error("Error", e.what_without_backtrace());
  } catch (const std::exception& e) {
    // gloo's own exceptions (gloo::IoException, gloo::TimeoutException) derive from
    // std::runtime_error.
    return error("Error", e.what());
  } catch (...) {
    return error("Error", "unknown C++ exception in c10d");
  }
}

// While a rank waits for the rendezvous, c10d logs every failed connection attempt with a
// C++ backtrace (dozens of lines a second); the error that ends the wait says the same in
// one sentence. Silenced for the rendezvous only, unless TORCH_CPP_LOG_LEVEL asks for them.
class QuietRendezvousLogs {
 public:
  QuietRendezvousLogs() : active_(std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) {
    if (active_) {
      saved_ = FLAGS_caffe2_log_level;
      FLAGS_caffe2_log_level = 3;  // FATAL only: above c10d's warnings and errors
    }
  }
  ~QuietRendezvousLogs() {
    if (active_) FLAGS_caffe2_log_level = saved_;
  }

 private:
  bool active_;
  int saved_ = 0;
};

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  // Waits up to the group's timeout, and rethrows the collective's exception if it failed.
  work->wait();
}
}  // namespace

extern "C" {

// Joins (rank 0: hosts) the TCPStore at host:port and waits until every rank has; the
// group is then connected with facenet_group_connect. Two calls, so that a failure to
// reach the rendezvous reads differently from one to reach the other ranks.
char* facenet_group_new(const char* host, uint16_t port, int rank, int world_size,
                        int64_t timeout_ms, facenet_group** out) {
  return guarded([&] {
    QuietRendezvousLogs quiet;
    c10d::TCPStoreOptions options;
    options.port = port;
    options.isServer = rank == 0;
    options.numWorkers = static_cast<size_t>(world_size);
    options.waitWorkers = true;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    auto group = std::make_unique<facenet_group>();
    group->store = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
    *out = group.release();
  });
}

// Builds the Gloo group over the group's store: every rank connects to every other.
// `interface` names the network interface Gloo binds to (GLOO_SOCKET_IFNAME); empty: the
// address `bind` (when not empty), else the address this machine's hostname resolves to.
char* facenet_group_connect(facenet_group* group, int rank, int world_size, int64_t timeout_ms,
                            const char* interface, const char* bind) {
  return guarded([&] {
    QuietRendezvousLogs quiet;
    auto gloo_options = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    // One worker thread: collectives here run one at a time from the training thread.
    gloo_options->threads = 1;
    if (interface[0] != '\0') {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    } else if (bind[0] != '\0') {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind));
    } else {
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::static_intrusive_pointer_cast<c10d::Store>(group->store), rank, world_size,
        gloo_options);
  });
}

void facenet_group_free(facenet_group* group) { delete group; }

// Sums (op 0), or takes the max (op 1) of, each tensor across ranks, in place.
char* facenet_group_all_reduce_(facenet_group* group, const handle* xs, size_t n, int op) {
  return guarded([&] {
    // One collective per tensor: a list given to c10d means one tensor per local device,
    // all of one shape. Callers flatten many small tensors into one (bucketing).
    for (size_t i = 0; i < n; i++) {
      std::vector<at::Tensor> one{*xs[i]};
      c10d::AllreduceOptions options;
      options.reduceOp = op == 1 ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
      wait(group->gloo->allreduce(one, options));
    }
  });
}

// Overwrites each tensor with rank `root`'s.
char* facenet_group_broadcast_(facenet_group* group, const handle* xs, size_t n, int root) {
  return guarded([&] {
    for (size_t i = 0; i < n; i++) {
      std::vector<at::Tensor> one{*xs[i]};
      c10d::BroadcastOptions options;
      options.rootRank = root;
      wait(group->gloo->broadcast(one, options));
    }
  });
}

// Every rank's `x` (same shape on each), concatenated along dim 0 in rank order.
char* facenet_group_all_gather(facenet_group* group, handle x, handle* out) {
  return guarded([&] {
    std::vector<at::Tensor> input{x->contiguous()};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int i = 0; i < group->gloo->getSize(); i++) outputs[0].push_back(at::empty_like(input[0]));
    wait(group->gloo->allgather(outputs, input));
    *out = new at::Tensor(at::cat(outputs[0], 0));
  });
}

char* facenet_group_barrier(facenet_group* group) {
  return guarded([&] { wait(group->gloo->barrier()); });
}

// The rendezvous store, for the ranks to tell one another what failed.
char* facenet_group_store_set(facenet_group* group, const char* key, const char* value) {
  return guarded([&] {
    std::string text(value);
    group->store->set(key, std::vector<uint8_t>(text.begin(), text.end()));
  });
}

// Whether `key` is set, without waiting.
char* facenet_group_store_check(facenet_group* group, const char* key, bool* present) {
  return guarded([&] { *present = group->store->check({std::string(key)}); });
}
}
