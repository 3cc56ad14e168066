// IndRNN's time loop, forward and backpropagation through time (see cells/indrnn.py):
//   h_t = act(projected_t + u ⊙ h_{t-1}),   act = ReLU or tanh
// The recurrence is elementwise, so the loop is one pass over memory per step and no GEMM at all;
// u's gradient is one reduction at the end.
#include <torch/library.h>

#include "common.h"

namespace rnnzoo {
namespace {

template <typename T>
void forward_rows(const T* __restrict__ pre, const T* __restrict__ u, const T* __restrict__ h_prev, T* __restrict__ h_next,
                  T* __restrict__ out, const bool* keep, int64_t b_begin, int64_t b_end, int64_t H, bool relu) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ p = pre + b * H;
    const T* __restrict__ hp = h_prev + b * H;
    T* __restrict__ hn = h_next + b * H;
    T* __restrict__ o = out + b * H;
    if (keep && !keep[b]) {  // past this sequence's end: the state stays, the output is 0
      for (int64_t j = 0; j < H; ++j) {
        hn[j] = hp[j];
        o[j] = T(0);
      }
    } else if (relu) {
      for (int64_t j = 0; j < H; ++j) {
        const T z = p[j] + u[j] * hp[j];
        const T h = z > T(0) ? z : T(0);
        hn[j] = h;
        o[j] = h;
      }
    } else {
      for (int64_t j = 0; j < H; ++j) {
        const T h = tanh(p[j] + u[j] * hp[j]);
        hn[j] = h;
        o[j] = h;
      }
    }
  }
}

// g_h holds dL/dh_t on entry and dL/dh_{t-1} on return (each element is read before it is written).
template <typename T>
void backward_rows(const T* __restrict__ g_out, T* g_h, const T* __restrict__ out, const T* __restrict__ u,
                   T* __restrict__ g_pre, const bool* keep, int64_t b_begin, int64_t b_end, int64_t H, bool relu) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ go = g_out + b * H;
    const T* __restrict__ y = out + b * H;
    T* gh = g_h + b * H;
    T* __restrict__ gp = g_pre + b * H;
    if (keep && !keep[b]) {  // the step did not happen: its state's gradient passes through
      for (int64_t j = 0; j < H; ++j) gp[j] = T(0);
    } else if (relu) {
      for (int64_t j = 0; j < H; ++j) {
        const T dz = y[j] > T(0) ? gh[j] + go[j] : T(0);  // ReLU's gradient at 0 is 0, as torch's
        gp[j] = dz;
        gh[j] = dz * u[j];
      }
    } else {
      for (int64_t j = 0; j < H; ++j) {
        const T dz = (gh[j] + go[j]) * (T(1) - y[j] * y[j]);
        gp[j] = dz;
        gh[j] = dz * u[j];
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> indrnn_loop(const at::Tensor& projected, const at::Tensor& h0,
                                                           const at::Tensor& recurrent_weight,
                                                           const c10::optional<at::Tensor>& keep, bool relu) {
  PlainKernelGuard guard;
  const int64_t T = projected.size(0), B = projected.size(1), H = h0.size(1);
  check_time_major(projected, 1, H, "indrnn_loop");
  check_shape(h0, {B, H}, "h0", "indrnn_loop");
  check_shape(recurrent_weight, {H}, "recurrent_weight", "indrnn_loop");
  auto outputs = at::empty({T, B, H}, projected.options());
  auto states = at::empty({T + 1, B, H}, projected.options());  // h before each step, and the last
  states[0].copy_(h0);
  const auto u = recurrent_weight.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, "indrnn_loop");
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "indrnn_loop", [&] {
    const scalar_t* p = projected.data_ptr<scalar_t>();
    scalar_t* s = states.data_ptr<scalar_t>();
    scalar_t* o = outputs.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      for_rows(B, H, [&](int64_t b0, int64_t b1) {
        forward_rows<scalar_t>(p + t * B * H, u.data_ptr<scalar_t>(), s + t * B * H, s + (t + 1) * B * H, o + t * B * H,
                               step_keep(keep_ptr, t, B), b0, b1, H, relu);
      });
    }
  });
  return {outputs, states[T].clone(), states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> indrnn_loop_backward(const at::Tensor& grad_outputs, const at::Tensor& grad_final,
                                                                    const at::Tensor& recurrent_weight,
                                                                    const c10::optional<at::Tensor>& keep, bool relu,
                                                                    const at::Tensor& outputs, const at::Tensor& states) {
  PlainKernelGuard guard;
  const int64_t T = grad_outputs.size(0), B = grad_outputs.size(1), H = grad_outputs.size(2);
  auto grad_pre = at::empty({T, B, H}, grad_outputs.options());
  auto grad_h = grad_final.contiguous().clone();
  const auto g_out = grad_outputs.contiguous();
  check_shape(recurrent_weight, {H}, "recurrent_weight", "indrnn_loop_backward");
  const auto u = recurrent_weight.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, "indrnn_loop_backward");
  AT_DISPATCH_FLOATING_TYPES(grad_outputs.scalar_type(), "indrnn_loop_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t at_t = t * B * H;
      for_rows(B, H, [&](int64_t b0, int64_t b1) {
        backward_rows<scalar_t>(g_out.data_ptr<scalar_t>() + at_t, grad_h.data_ptr<scalar_t>(), outputs.data_ptr<scalar_t>() + at_t,
                                u.data_ptr<scalar_t>(), grad_pre.data_ptr<scalar_t>() + at_t, step_keep(keep_ptr, t, B),
                                b0, b1, H, relu);
      });
    }
  });
  // du = Σ_t Σ_b dpre_t ⊙ h_{t-1} (zero where the step did not happen, since dpre is zero there).
  const auto grad_u = (grad_pre * states.narrow(0, 0, T)).sum(at::IntArrayRef{0, 1});
  return {grad_pre, grad_h, grad_u};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnzoo, CPU, m) {
  m.impl(RNNZOO_OP("indrnn_loop"), &indrnn_loop);
  m.impl(RNNZOO_OP("indrnn_loop_backward"), &indrnn_loop_backward);
}

}  // namespace rnnzoo
