// Phased LSTM's time loop, forward and backpropagation through time (see cells/phased_lstm.py).
// The time gate k_t (T, B, H) depends on the timestamps and the gate's parameters only, not on the
// recurrence, so it is computed with torch ops before the loop and comes in as an input; the loop
// returns dL/dk and autograd takes it from there to τ, s, r_on and the timestamps.
//   pre_t = projected_t + h_{t-1} W^T         (B, 4H), gates i, f, g, o as torch.nn.LSTM
//   c̃ = σ(f) c_{t-1} + σ(i) tanh(g),   h̃ = σ(o) tanh(c̃)
//   c_t = k c̃ + (1 - k) c_{t-1},         h_t = k h̃ + (1 - k) h_{t-1}
#include <torch/library.h>

#include "common.h"

namespace rnnzoo {
namespace {

constexpr int64_t kSaved = 6;  // per unit: σ(i), σ(f), tanh(g), σ(o), tanh(c̃), c̃

template <typename T>
void forward_rows(const T* __restrict__ pre, const T* __restrict__ k, const T* __restrict__ h_prev,
                  const T* __restrict__ c_prev, T* __restrict__ h_next, T* __restrict__ c_next, T* __restrict__ out,
                  T* __restrict__ saved, const bool* keep, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    const T* __restrict__ hp = h_prev + b * H;
    const T* __restrict__ cp = c_prev + b * H;
    T* __restrict__ hn = h_next + b * H;
    T* __restrict__ cn = c_next + b * H;
    T* __restrict__ o = out + b * H;
    if (keep && !keep[b]) {  // past this sequence's end: the state stays, the output is 0
      for (int64_t j = 0; j < H; ++j) {
        hn[j] = hp[j];
        cn[j] = cp[j];
        o[j] = T(0);
      }
      continue;
    }
    const T* __restrict__ p = pre + 4 * b * H;
    const T* __restrict__ kb = k + b * H;
    T* __restrict__ s = saved + kSaved * b * H;
    // Activations first, in simple loops (gcc vectorises these; one fused loop it would not).
    for (int64_t j = 0; j < 2 * H; ++j) s[j] = sigmoid(p[j]);
    for (int64_t j = 2 * H; j < 3 * H; ++j) s[j] = tanh(p[j]);
    for (int64_t j = 3 * H; j < 4 * H; ++j) s[j] = sigmoid(p[j]);
    for (int64_t j = 0; j < H; ++j) {
      const T i = s[j], f = s[H + j], g = s[2 * H + j], og = s[3 * H + j];
      const T c_proposed = f * cp[j] + i * g;
      const T tanh_c = tanh(c_proposed);
      const T h = kb[j] * (og * tanh_c) + (T(1) - kb[j]) * hp[j];
      cn[j] = kb[j] * c_proposed + (T(1) - kb[j]) * cp[j];
      hn[j] = h;
      o[j] = h;
      s[4 * H + j] = tanh_c;
      s[5 * H + j] = c_proposed;
    }
  }
}

// g_h, g_c hold dL/dh_t, dL/dc_t on entry; on return g_c holds dL/dc_{t-1} and g_h the part of
// dL/dh_{t-1} that does not pass through W (each element is read before it is written).
template <typename T>
void backward_rows(const T* __restrict__ g_out, T* g_h, T* g_c, const T* __restrict__ k, const T* __restrict__ saved,
                   const T* __restrict__ h_prev, const T* __restrict__ c_prev, T* __restrict__ g_pre, T* __restrict__ g_k,
                   const bool* keep, int64_t B, int64_t H) {
  for (int64_t b = 0; b < B; ++b) {
    T* __restrict__ gp = g_pre + 4 * b * H;
    T* __restrict__ gk = g_k + b * H;
    if (keep && !keep[b]) {  // the step did not happen: the state's gradients pass through
      for (int64_t j = 0; j < 4 * H; ++j) gp[j] = T(0);
      for (int64_t j = 0; j < H; ++j) gk[j] = T(0);
      continue;
    }
    const T* __restrict__ go = g_out + b * H;
    const T* __restrict__ kb = k + b * H;
    const T* __restrict__ hp = h_prev + b * H;
    const T* __restrict__ cp = c_prev + b * H;
    const T* __restrict__ s = saved + kSaved * b * H;
    T* gh = g_h + b * H;
    T* gc = g_c + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T dh = gh[j] + go[j], dc = gc[j];
      const T i = s[j], f = s[H + j], g = s[2 * H + j], og = s[3 * H + j], tanh_c = s[4 * H + j], c_proposed = s[5 * H + j];
      const T dh_proposed = dh * kb[j];
      gk[j] = dh * (og * tanh_c - hp[j]) + dc * (c_proposed - cp[j]);
      const T dc_proposed = dc * kb[j] + dh_proposed * og * (T(1) - tanh_c * tanh_c);
      gp[j] = dc_proposed * g * i * (T(1) - i);
      gp[H + j] = dc_proposed * cp[j] * f * (T(1) - f);
      gp[2 * H + j] = dc_proposed * i * (T(1) - g * g);
      gp[3 * H + j] = dh_proposed * tanh_c * og * (T(1) - og);
      gc[j] = dc * (T(1) - kb[j]) + dc_proposed * f;
      gh[j] = dh * (T(1) - kb[j]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> phased_lstm_loop(
    const at::Tensor& projected, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_hh, const at::Tensor& k,
    const c10::optional<at::Tensor>& keep) {
  PlainKernelGuard guard;
  const int64_t T = projected.size(0), B = projected.size(1), H = h0.size(1);
  check_time_major(projected, 4, H, "phased_lstm_loop");
  TORCH_CHECK(k.is_contiguous() && k.sizes() == at::IntArrayRef({T, B, H}), "phased_lstm_loop: k must be contiguous (T, B, H)");
  auto outputs = at::empty({T, B, H}, projected.options());
  auto saved = at::empty({T, B, kSaved * H}, projected.options());
  auto hs = at::empty({T + 1, B, H}, projected.options());  // h, c before each step, and the last
  auto cs = at::empty({T + 1, B, H}, projected.options());
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  auto pre = projected.clone();  // each step adds h_{t-1} W^T in place
  const auto weight_t = weight_hh.t();
  const bool* keep_ptr = keep_pointer(keep);
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "phased_lstm_loop", [&] {
    for (int64_t t = 0; t < T; ++t) {
      auto pre_t = pre[t];
      pre_t.addmm_(hs[t], weight_t);
      forward_rows<scalar_t>(pre_t.data_ptr<scalar_t>(), k[t].data_ptr<scalar_t>(), hs[t].data_ptr<scalar_t>(),
                             cs[t].data_ptr<scalar_t>(), hs[t + 1].data_ptr<scalar_t>(), cs[t + 1].data_ptr<scalar_t>(),
                             outputs[t].data_ptr<scalar_t>(), saved[t].data_ptr<scalar_t>(), keep_ptr ? keep_ptr + t * B : nullptr,
                             B, H);
    }
  });
  return {outputs, hs[T].clone(), cs[T].clone(), saved, hs, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> phased_lstm_loop_backward(
    const at::Tensor& grad_outputs, const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& weight_hh,
    const at::Tensor& k, const c10::optional<at::Tensor>& keep, const at::Tensor& saved, const at::Tensor& hs,
    const at::Tensor& cs) {
  PlainKernelGuard guard;
  const int64_t T = grad_outputs.size(0), B = grad_outputs.size(1), H = grad_outputs.size(2);
  auto grad_pre = at::empty({T, B, 4 * H}, grad_outputs.options());
  auto grad_k = at::empty({T, B, H}, grad_outputs.options());
  auto g_h = grad_h.contiguous().clone();
  auto g_c = grad_c.contiguous().clone();
  const auto g_out = grad_outputs.contiguous();
  const bool* keep_ptr = keep_pointer(keep);
  AT_DISPATCH_FLOATING_TYPES(grad_outputs.scalar_type(), "phased_lstm_loop_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      backward_rows<scalar_t>(g_out[t].data_ptr<scalar_t>(), g_h.data_ptr<scalar_t>(), g_c.data_ptr<scalar_t>(),
                              k[t].data_ptr<scalar_t>(), saved[t].data_ptr<scalar_t>(), hs[t].data_ptr<scalar_t>(),
                              cs[t].data_ptr<scalar_t>(), grad_pre[t].data_ptr<scalar_t>(), grad_k[t].data_ptr<scalar_t>(),
                              keep_ptr ? keep_ptr + t * B : nullptr, B, H);
      g_h.addmm_(grad_pre[t], weight_hh);  // dh_{t-1} = (the direct part) + dpre W
    }
  });
  const auto grad_weight_hh = grad_pre.view({T * B, 4 * H}).t().mm(hs.narrow(0, 0, T).reshape({T * B, H}));
  return {grad_pre, g_h, g_c, grad_weight_hh, grad_k};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnzoo, CPU, m) {
  m.impl("phased_lstm_loop", &phased_lstm_loop);
  m.impl("phased_lstm_loop_backward", &phased_lstm_loop_backward);
}

}  // namespace rnnzoo
