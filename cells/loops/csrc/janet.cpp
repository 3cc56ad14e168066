// JANET's time loop, forward and backpropagation through time (see cells/janet.py for the equations).
//   pre_t = projected_t + c_{t-1} W^T          (B, 2H): forget pre-activation s, candidate ĉ
//   c_t   = σ(s) c_{t-1} + (1 - σ(s - β)) tanh(ĉ)
// Per step one addmm and one vectorised pointwise pass; the weight gradient is one GEMM at the end.
#include <torch/library.h>

#include "common.h"
#include "gemm.h"

namespace rnnzoo {
namespace {

// One step's pointwise part for the B rows (raw pointers, so that gcc vectorises the row loops).
template <typename T>
void forward_rows(const T* __restrict__ pre, const T* __restrict__ c_prev, T* __restrict__ c_next, T* __restrict__ out,
                  T* __restrict__ act, const bool* keep, int64_t b_begin, int64_t b_end, int64_t H, T beta) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ s = pre + 2 * b * H;
    const T* __restrict__ cp = c_prev + b * H;
    T* __restrict__ cn = c_next + b * H;
    T* __restrict__ o = out + b * H;
    if (keep && !keep[b]) {  // past this sequence's end: the state stays, the output is 0
      for (int64_t j = 0; j < H; ++j) {
        cn[j] = cp[j];
        o[j] = T(0);
      }
      for (int64_t j = 0; j < 3 * H; ++j) act[3 * b * H + j] = T(0);  // unread, but every output is defined
      continue;
    }
    T* __restrict__ a = act + 3 * b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T f = sigmoid(s[j]);
      const T f_shifted = sigmoid(s[j] - beta);
      const T g = tanh(s[H + j]);
      const T c = f * cp[j] + (T(1) - f_shifted) * g;
      a[j] = f;
      a[H + j] = f_shifted;
      a[2 * H + j] = g;
      cn[j] = c;
      o[j] = c;
    }
  }
}

// dL/dpre of one step and the part of dL/dc_{t-1} that does not pass through W. g_c holds dL/dc_t on
// entry and that direct part on return (each element is read before it is written).
template <typename T>
void backward_rows(const T* __restrict__ g_out, const T* g_c, const T* __restrict__ act, const T* __restrict__ c_prev,
                   T* __restrict__ g_pre, T* direct, const bool* keep, int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ go = g_out + b * H;
    const T* gc = g_c + b * H;
    T* __restrict__ gp = g_pre + 2 * b * H;
    T* d = direct + b * H;
    if (keep && !keep[b]) {  // the step did not happen: its state's gradient passes through
      for (int64_t j = 0; j < H; ++j) {
        gp[j] = T(0);
        gp[H + j] = T(0);
        d[j] = gc[j];
      }
      continue;
    }
    const T* __restrict__ a = act + 3 * b * H;
    const T* __restrict__ cp = c_prev + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T dc = gc[j] + go[j];
      const T f = a[j], f_shifted = a[H + j], g = a[2 * H + j];
      gp[j] = dc * (cp[j] * f * (T(1) - f) - g * f_shifted * (T(1) - f_shifted));
      gp[H + j] = dc * (T(1) - f_shifted) * (T(1) - g * g);
      d[j] = dc * f;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> janet_loop(
    const at::Tensor& projected, const at::Tensor& c0, const at::Tensor& weight_hh, const c10::optional<at::Tensor>& keep,
    double shift) {
  PlainKernelGuard guard;
  const int64_t T = projected.size(0), B = projected.size(1), H = c0.size(1);
  check_time_major(projected, 2, H, "janet_loop");
  check_shape(c0, {B, H}, "c0", "janet_loop");
  check_shape(weight_hh, {2 * H, H}, "weight_hh", "janet_loop");
  auto outputs = at::empty({T, B, H}, projected.options());
  auto activations = at::empty({T, B, 3 * H}, projected.options());  // σ(s), σ(s - β), tanh(ĉ)
  auto states = at::empty({T + 1, B, H}, projected.options());       // c before each step, and the last
  states[0].copy_(c0);
  auto pre = at::empty({B, 2 * H}, projected.options());  // one step's gates, reused (stays in cache)
  const auto weight = weight_hh.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, "janet_loop");
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "janet_loop", [&] {
    scalar_t *const c = states.data_ptr<scalar_t>(), *const out = outputs.data_ptr<scalar_t>();
    scalar_t *const act = activations.data_ptr<scalar_t>(), *const pre_all = pre.data_ptr<scalar_t>();
    const scalar_t *const proj = projected.data_ptr<scalar_t>(), *const w = weight.data_ptr<scalar_t>();
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {  // each block of rows runs the whole loop
      for (int64_t t = 0; t < T; ++t) {
        const int64_t step = t * B * H;  // offset of step t in (T, B, H) buffers
        scalar_t* pre_rows = pre_all + 2 * b0 * H;  // pre = projected_t + c_{t-1} Wᵀ
        std::memcpy(pre_rows, proj + 2 * (step + b0 * H), (b1 - b0) * 2 * H * sizeof(scalar_t));
        gemm_accumulate<scalar_t>(b1 - b0, 2 * H, H, c + step + b0 * H, H, w, true, pre_rows, 2 * H);
        forward_rows<scalar_t>(pre_all, c + step, c + step + B * H, out + step, act + 3 * step, step_keep(keep_ptr, t, B), b0, b1,
                               H, static_cast<scalar_t>(shift));
      }
    });
  });
  return {outputs, states[T].clone(), activations, states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> janet_loop_backward(
    const at::Tensor& grad_outputs, const at::Tensor& grad_final, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& keep, const at::Tensor& activations, const at::Tensor& states) {
  PlainKernelGuard guard;
  const int64_t T = grad_outputs.size(0), B = grad_outputs.size(1), H = grad_outputs.size(2);
  auto grad_pre = at::empty({T, B, 2 * H}, grad_outputs.options());
  auto grad_c = grad_final.contiguous().clone();  // dL/dc_t carried back through time
  const auto g_out_all = grad_outputs.contiguous();
  const auto weight = weight_hh.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, "janet_loop_backward");
  AT_DISPATCH_FLOATING_TYPES(grad_outputs.scalar_type(), "janet_loop_backward", [&] {
    const scalar_t *const go = g_out_all.data_ptr<scalar_t>(), *const act = activations.data_ptr<scalar_t>();
    const scalar_t *const c = states.data_ptr<scalar_t>(), *const w = weight.data_ptr<scalar_t>();
    scalar_t *const gc = grad_c.data_ptr<scalar_t>(), *const gp = grad_pre.data_ptr<scalar_t>();
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t step = t * B * H;  // offset of step t in (T, B, H) buffers
        backward_rows<scalar_t>(go + step, gc, act + 3 * step, c + step, gp + 2 * step, gc, step_keep(keep_ptr, t, B), b0, b1, H);
        // dc_{t-1} = (the direct part, written in place) + dpre W
        gemm_accumulate<scalar_t>(b1 - b0, H, 2 * H, gp + 2 * (step + b0 * H), 2 * H, w, false, gc + b0 * H, H);
      }
    });
  });
  const auto grad_weight_hh = grad_pre.view({T * B, 2 * H}).t().mm(states.narrow(0, 0, T).reshape({T * B, H}));
  return {grad_pre, grad_c, grad_weight_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnzoo, CPU, m) {
  m.impl(RNNZOO_OP("janet_loop"), &janet_loop);
  m.impl(RNNZOO_OP("janet_loop_backward"), &janet_loop_backward);
}

}  // namespace rnnzoo
