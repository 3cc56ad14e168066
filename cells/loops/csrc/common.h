// Shared pieces of the fused CPU time loops: activations the compiler can vectorise, and guards.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// The ops' registered names carry their version (cells/loops/ops.py's VERSION, passed to the build
// as RNNZOO_OPS_VERSION): RNNZOO_OP("janet_loop") is "janet_loop_v5".
#define RNNZOO_STRINGIFY_(x) #x
#define RNNZOO_STRINGIFY(x) RNNZOO_STRINGIFY_(x)
#define RNNZOO_OP(name) name "_v" RNNZOO_STRINGIFY(RNNZOO_OPS_VERSION)

namespace rnnzoo {

// exp for float written so that gcc vectorises the loops calling it (std::exp is a libm call it
// cannot): Cephes' expf, a range reduction by ln 2 and a degree-6 polynomial, about 1 ulp. The
// input is clamped to where the result is a normal float.
inline float exp_vectorizable(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <>
inline float sigmoid<float>(float x) {
  return 1.0f / (1.0f + exp_vectorizable(-x));
}

template <typename T>
inline T tanh(T x) {
  return std::tanh(x);
}
// Cephes' tanhf: an odd polynomial below 0.625 (where 1 - 2/(e^2x + 1) would lose digits), the
// exponential form above it.
template <>
inline float tanh<float>(float x) {
  const float ax = std::fabs(x);
  const float z = x * x;
  const float small =
      ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z -
       3.33332819422e-1f) * z * x + x;
  const float large = std::copysign(1.0f - 2.0f / (exp_vectorizable(2.0f * ax) + 1.0f), x);
  return ax < 0.625f ? small : large;
}

// Σ x[0..n) as 8 interleaved partial sums, which gcc vectorises: one running sum is a chain of
// dependent scalar adds that it may not reorder (without -ffast-math), 4 cycles each.
template <typename T>
inline T row_sum(const T* __restrict__ x, int64_t n) {
  T partial[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) partial[l] += x[j + l];
  }
  T sum = T(0);
  for (; j < n; ++j) sum += x[j];
  for (int l = 0; l < 8; ++l) sum += partial[l];
  return sum;
}

// The loops call ATen (addmm, mm) on tensors that may require grad, possibly under autocast: run
// them as plain kernels, with neither autograd recording nor autocast casting.
struct PlainKernelGuard {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

// The fewest batch rows worth a thread: ~2k elements of state.
inline int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(H, 1)); }

// Runs f(b_begin, b_end) over the batch rows of one step, split across torch's intra-op threads
// (rows are independent, so results do not depend on the split).
template <typename F>
inline void for_rows(int64_t B, int64_t H, const F& f) {
  at::parallel_for(0, B, row_grain(H), f);
}

// Runs f(b_begin, b_end) once per block of batch rows, each block's whole time loop on one thread:
// rows are independent through time, so threads need not meet at a barrier after every step.
template <typename F>
inline void for_row_blocks(int64_t B, int64_t H, const F& f) {
  at::parallel_for(0, B, row_grain(H), f);
}

// keep (T, B) as bytes, or nullptr when every step of every sequence is valid.
inline const bool* keep_pointer(const c10::optional<at::Tensor>& keep, int64_t T, int64_t B, const char* op) {
  if (!keep.has_value()) return nullptr;
  TORCH_CHECK(keep->scalar_type() == at::kBool && keep->is_contiguous() && keep->sizes() == at::IntArrayRef({T, B}), op,
              ": keep must be a contiguous bool tensor of shape (", T, ", ", B, "), got ", keep->scalar_type(), " ",
              keep->sizes());
  return keep->data_ptr<bool>();
}

// Step t's row of keep, or nullptr when every step counts.
inline const bool* step_keep(const bool* keep, int64_t t, int64_t B) { return keep ? keep + t * B : nullptr; }

// The kernels read these with raw pointers: a wrong shape would read out of bounds.
inline void check_shape(const at::Tensor& x, at::IntArrayRef shape, const char* name, const char* op) {
  TORCH_CHECK(x.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", x.sizes());
}

inline void check_time_major(const at::Tensor& projected, int64_t gates, int64_t hidden, const char* op) {
  TORCH_CHECK(projected.dim() == 3 && projected.size(2) == gates * hidden && projected.is_contiguous(), op,
              ": projected must be contiguous (T, B, ", gates, "*H) with H=", hidden, ", got ", projected.sizes());
}

}  // namespace rnnzoo
