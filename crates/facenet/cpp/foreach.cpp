// ATen's multi-tensor ("foreach") ops, which tch 0.24 does not wrap. An optimizer step
// over N parameter tensors is then a handful of kernel launches instead of several per
// tensor: on a GPU, launches dominate the update of a network of hundreds of small
// tensors (torch.optim uses the same ops by default on CUDA).
//
// Tensors cross as tch's handles (at::Tensor*). Every function returns nullptr, or a
// message that the caller frees with facenet_free_error.
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_addcdiv.h>
#include <ATen/ops/_foreach_addcmul.h>
#include <ATen/ops/_foreach_copy.h>
#include <ATen/ops/_foreach_div.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_foreach_sqrt.h>
#include <ATen/ops/_foreach_zero.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

using handle = at::Tensor*;

namespace {
std::vector<at::Tensor> list(const handle* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; i++) out.push_back(*tensors[i]);
  return out;
}

void give(std::vector<at::Tensor>&& tensors, handle* out) {
  for (size_t i = 0; i < tensors.size(); i++) out[i] = new at::Tensor(std::move(tensors[i]));
}

template <typename F>
char* guarded(F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception in a foreach op");
  }
}
}  // namespace

extern "C" {

void facenet_free_error(char* message) { free(message); }

char* facenet_foreach_zero_(const handle* xs, size_t n) {
  return guarded([&] { at::_foreach_zero_(list(xs, n)); });
}

char* facenet_foreach_mul_scalar_(const handle* xs, size_t n, double s) {
  return guarded([&] { at::_foreach_mul_(list(xs, n), s); });
}

char* facenet_foreach_div_scalar_(const handle* xs, size_t n, double s) {
  return guarded([&] { at::_foreach_div_(list(xs, n), s); });
}

char* facenet_foreach_add_scalar_(const handle* xs, size_t n, double s) {
  return guarded([&] { at::_foreach_add_(list(xs, n), s); });
}

// xs += alpha·ys
char* facenet_foreach_add_list_(const handle* xs, const handle* ys, size_t n, double alpha) {
  return guarded([&] { at::_foreach_add_(list(xs, n), list(ys, n), alpha); });
}

// out = xs + alpha·ys (new tensors)
char* facenet_foreach_add_list(const handle* xs, const handle* ys, size_t n, double alpha, handle* out) {
  return guarded([&] { give(at::_foreach_add(list(xs, n), list(ys, n), alpha), out); });
}

// xs += value·a·b
char* facenet_foreach_addcmul_(const handle* xs, const handle* a, const handle* b, size_t n, double value) {
  return guarded([&] { at::_foreach_addcmul_(list(xs, n), list(a, n), list(b, n), value); });
}

// xs += value·a/b
char* facenet_foreach_addcdiv_(const handle* xs, const handle* a, const handle* b, size_t n, double value) {
  return guarded([&] { at::_foreach_addcdiv_(list(xs, n), list(a, n), list(b, n), value); });
}

char* facenet_foreach_sqrt(const handle* xs, size_t n, handle* out) {
  return guarded([&] { give(at::_foreach_sqrt(list(xs, n)), out); });
}

char* facenet_foreach_copy_(const handle* xs, const handle* src, size_t n) {
  return guarded([&] { at::_foreach_copy_(list(xs, n), list(src, n)); });
}

// One 0-dim tensor per input: its `ord`-norm (2 for L2, inf for max |x|).
char* facenet_foreach_norm(const handle* xs, size_t n, double ord, handle* out) {
  return guarded([&] { give(at::_foreach_norm(list(xs, n), ord), out); });
}
}
