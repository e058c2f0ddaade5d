// The one piece of libtorch that tch 0.24 does not wrap: choosing autocast's reduced
// dtype (tch's `autocast` only toggles CUDA autocast and leaves it at float16). Autocast
// state is thread-local in libtorch, so entering and leaving on the same thread (the
// model's worker) affects nothing else.
#include <ATen/autocast_mode.h>

namespace {
c10::DeviceType device_type_of(int device) {
  return device == 1 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
}  // namespace

extern "C" {

// Turns autocast on for `device` (0 = CPU, 1 = CUDA) with bfloat16 as its reduced dtype.
// Writes the state it replaced, for facenet_autocast_leave. Returns 0, or 1 when
// libtorch threw.
int facenet_autocast_enter_bf16(int device, bool* was_enabled, int8_t* was_dtype) noexcept {
  try {
    const auto type = device_type_of(device);
    *was_enabled = at::autocast::is_autocast_enabled(type);
    *was_dtype = static_cast<int8_t>(at::autocast::get_autocast_dtype(type));
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Restores what facenet_autocast_enter_bf16 replaced, dropping the cast-weight cache when
// the outermost region ends (as torch.autocast's __exit__ does).
int facenet_autocast_leave(int device, bool was_enabled, int8_t was_dtype) noexcept {
  try {
    const auto type = device_type_of(device);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(type, was_enabled);
    at::autocast::set_autocast_dtype(type, static_cast<c10::ScalarType>(was_dtype));
    return 0;
  } catch (...) {
    return 1;
  }
}

// The dtype autocast would use on `device` right now, and whether it is on; for tests.
int8_t facenet_autocast_dtype(int device) noexcept {
  try {
    return static_cast<int8_t>(at::autocast::get_autocast_dtype(device_type_of(device)));
  } catch (...) {
    return -1;
  }
}

bool facenet_autocast_enabled(int device) noexcept {
  try {
    return at::autocast::is_autocast_enabled(device_type_of(device));
  } catch (...) {
    return false;
  }
}
}
