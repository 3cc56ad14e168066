// The Recurrent Highway Network's time loop, forward and backpropagation through time (see
// cells/rhn.py). Every step runs `depth` highway micro-layers l = 0..D-1 on the state:
//   pre_l = s_l m W_l^T + b_l (+ projected_t when l = 0)          (B, 2H): h and t pre-activations
//   s_{l+1} = tanh(pre_h) σ(pre_t) + s_l (1 - σ(pre_t))
// with m the variational state-dropout mask (B, H) of the sequence, or none. Saved per micro-layer
// and step, layer-major so that each micro-layer's weight gradient is one GEMM at the end.
#include <torch/library.h>

#include "common.h"

namespace rnnzoo {
namespace {

// One micro-layer's pointwise part; `add` is the input projection (first micro-layer) or nullptr.
template <typename T>
void forward_rows(const T* __restrict__ pre, const T* __restrict__ add, const T* __restrict__ s_in, T* __restrict__ s_out,
                  T* __restrict__ act, int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ p = pre + 2 * b * H;
    const T* __restrict__ s = s_in + b * H;
    T* __restrict__ a = act + 2 * b * H;
    T* __restrict__ n = s_out + b * H;
    if (add) {  // two loops, not a test per element, so both vectorise
      const T* __restrict__ q = add + 2 * b * H;
      for (int64_t j = 0; j < 2 * H; ++j) a[j] = p[j] + q[j];
    } else {
      for (int64_t j = 0; j < 2 * H; ++j) a[j] = p[j];
    }
    for (int64_t j = 0; j < H; ++j) {
      const T h = tanh(a[j]);
      const T t = sigmoid(a[H + j]);
      a[j] = h;
      a[H + j] = t;
      n[j] = h * t + s[j] * (T(1) - t);
    }
  }
}

// The step's result where the sequence goes on, the old state (and output 0) past its end.
template <typename T>
void select_rows(const T* __restrict__ s_new, const T* __restrict__ s_old, T* __restrict__ state, T* __restrict__ out,
                 const bool* keep, int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const bool k = !keep || keep[b];
    for (int64_t j = 0; j < H; ++j) {
      state[b * H + j] = k ? s_new[b * H + j] : s_old[b * H + j];
      out[b * H + j] = k ? s_new[b * H + j] : T(0);
    }
  }
}

// ds holds dL/ds_{l+1} on entry; writes dL/dpre_l and leaves in ds the part of dL/ds_l that does
// not pass through W_l.
template <typename T>
void backward_rows(T* ds, const T* __restrict__ act, const T* __restrict__ s_in, T* __restrict__ g_pre, int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const T* __restrict__ a = act + 2 * b * H;
    const T* __restrict__ s = s_in + b * H;
    T* __restrict__ gp = g_pre + 2 * b * H;
    T* d = ds + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T h = a[j], t = a[H + j], g = d[j];
      gp[j] = g * t * (T(1) - h * h);
      gp[H + j] = g * (h - s[j]) * t * (T(1) - t);
      d[j] = g * (T(1) - t);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_loop(const at::Tensor& projected, const at::Tensor& s0,
                                                                    const at::Tensor& weight_hh, const at::Tensor& bias,
                                                                    const c10::optional<at::Tensor>& state_mask,
                                                                    const c10::optional<at::Tensor>& keep) {
  PlainKernelGuard guard;
  const int64_t T = projected.size(0), B = projected.size(1), H = s0.size(1), D = weight_hh.size(0);
  check_time_major(projected, 2, H, "rhn_loop");
  check_shape(weight_hh, {D, 2 * H, H}, "weight_hh", "rhn_loop");
  check_shape(bias, {D, 2 * H}, "bias", "rhn_loop");
  if (state_mask.has_value()) check_shape(*state_mask, {B, H}, "state_mask", "rhn_loop");
  auto outputs = at::empty({T, B, H}, projected.options());
  auto layer_states = at::empty({D, T, B, H}, projected.options());       // s_l, the input of micro-layer l
  auto activations = at::empty({D, T, B, 2 * H}, projected.options());  // tanh(pre_h), σ(pre_t)
  auto state = s0.contiguous().clone();
  auto next = at::empty({B, H}, projected.options());
  auto masked = at::empty({B, H}, projected.options());
  auto pre = at::empty({B, 2 * H}, projected.options());
  const bool* keep_ptr = keep_pointer(keep, T, B, "rhn_loop");
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "rhn_loop", [&] {
    for (int64_t t = 0; t < T; ++t) {
      // Each block of rows runs its micro-layers' GEMMs and pointwise passes on one thread.
      for_rows(B, H, [&](int64_t b0, int64_t b1) {
        const auto rows = [&](const at::Tensor& x) { return x.narrow(0, b0, b1 - b0); };
        rows(layer_states[0][t]).copy_(rows(state));
        for (int64_t l = 0; l < D; ++l) {
          const auto s_l = layer_states[l][t];
          auto masked_rows = rows(masked);
          const auto s_in = state_mask.has_value() ? at::mul_out(masked_rows, rows(s_l), rows(*state_mask)) : rows(s_l);
          auto pre_rows = rows(pre);
          at::addmm_out(pre_rows, bias[l], s_in, weight_hh[l].t());
          auto s_out = l + 1 < D ? layer_states[l + 1][t] : next;
          forward_rows<scalar_t>(pre.data_ptr<scalar_t>(), l == 0 ? projected[t].data_ptr<scalar_t>() : nullptr,
                                 s_l.data_ptr<scalar_t>(), s_out.data_ptr<scalar_t>(), activations[l][t].data_ptr<scalar_t>(), b0, b1, H);
        }
        select_rows<scalar_t>(next.data_ptr<scalar_t>(), layer_states[0][t].data_ptr<scalar_t>(), state.data_ptr<scalar_t>(),
                              outputs[t].data_ptr<scalar_t>(), step_keep(keep_ptr, t, B), b0, b1, H);
      });
    }
  });
  return {outputs, state, layer_states, activations};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rhn_loop_backward(
    const at::Tensor& grad_outputs, const at::Tensor& grad_final, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& state_mask, const c10::optional<at::Tensor>& keep, const at::Tensor& layer_states,
    const at::Tensor& activations) {
  PlainKernelGuard guard;
  const int64_t T = grad_outputs.size(0), B = grad_outputs.size(1), H = grad_outputs.size(2), D = weight_hh.size(0);
  auto grad_pre = at::empty({D, T, B, 2 * H}, grad_outputs.options());
  auto grad_state = grad_final.contiguous().clone();  // dL/ds_t carried back through time
  auto ds = at::empty({B, H}, grad_outputs.options());
  auto through_w = at::empty({B, H}, grad_outputs.options());
  const auto g_out = grad_outputs.contiguous();
  keep_pointer(keep, T, B, "rhn_loop_backward");  // checks its shape
  if (state_mask.has_value()) check_shape(*state_mask, {B, H}, "state_mask", "rhn_loop_backward");
  const auto keep_mask = keep.has_value() ? keep->to(grad_outputs.scalar_type()).unsqueeze(-1) : at::Tensor();  // (T, B, 1)
  AT_DISPATCH_FLOATING_TYPES(grad_outputs.scalar_type(), "rhn_loop_backward", [&] {
    for (int64_t t = T - 1; t >= 0; --t) {
      for_rows(B, H, [&](int64_t b0, int64_t b1) {
        const auto rows = [&](const at::Tensor& x) { return x.narrow(0, b0, b1 - b0); };
        auto d = rows(ds);
        at::add_out(d, rows(grad_state), rows(g_out[t]));
        if (keep_mask.defined()) d.mul_(rows(keep_mask[t]));  // no step past the end: nothing flows into it
        for (int64_t l = D - 1; l >= 0; --l) {
          auto g_pre = grad_pre[l][t];
          backward_rows<scalar_t>(ds.data_ptr<scalar_t>(), activations[l][t].data_ptr<scalar_t>(),
                                  layer_states[l][t].data_ptr<scalar_t>(), g_pre.data_ptr<scalar_t>(), b0, b1, H);
          if (state_mask.has_value()) {
            auto through = rows(through_w);
            at::mm_out(through, rows(g_pre), weight_hh[l]);
            d.addcmul_(through, rows(*state_mask));
          } else {
            d.addmm_(rows(g_pre), weight_hh[l]);
          }
        }
        auto g_state = rows(grad_state);
        if (keep_mask.defined()) {
          g_state.mul_(1 - rows(keep_mask[t])).add_(d);  // d is zero on the rows that did not step
        } else {
          g_state.copy_(d);
        }
      });
    }
  });
  std::vector<at::Tensor> weight_grads;
  for (int64_t l = 0; l < D; ++l) {
    auto inputs = state_mask.has_value() ? layer_states[l] * *state_mask : layer_states[l];
    weight_grads.push_back(grad_pre[l].view({T * B, 2 * H}).t().mm(inputs.reshape({T * B, H})));
  }
  return {grad_pre[0], grad_state, at::stack(weight_grads), grad_pre.sum(at::IntArrayRef{1, 2})};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnzoo, CPU, m) {
  m.impl(RNNZOO_OP("rhn_loop"), &rhn_loop);
  m.impl(RNNZOO_OP("rhn_loop_backward"), &rhn_loop_backward);
}

}  // namespace rnnzoo
