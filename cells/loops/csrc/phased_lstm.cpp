// Phased LSTM's time loop, forward and backpropagation through time (see cells/phased_lstm.py), and
// with the time gate always open, the plain LSTM's (lstm_loop).
// The time gate k_t is computed in the same pass (one where-chain of torch ops over (T, B, H) cost
// more than the loop), and again in the backward pass from the timestamps rather than saved;
// its parameters' gradients are reductions at the end.
//   φ = ((t - s) mod τ) / τ;  k = 2φ/r_on (φ < r_on/2), 2 - 2φ/r_on (φ < r_on), leak·φ (otherwise)
//   pre_t = projected_t + h_{t-1} W^T         (B, 4H), gates i, f, g, o as torch.nn.LSTM
//   c̃ = σ(f) c_{t-1} + σ(i) tanh(g),   h̃ = σ(o) tanh(c̃)
//   c_t = k c̃ + (1 - k) c_{t-1},         h_t = k h̃ + (1 - k) h_{t-1}
#include <torch/library.h>

#include <optional>

#include "common.h"
#include "gemm.h"

namespace rnnzoo {
namespace {

// Saved per unit, both loops: σ(i), σ(f), tanh(g), σ(o), tanh(c̃), c̃. The Phased LSTM's gate k and
// its cycle are recomputed in the backward pass from the step's timestamp (a subtract, a floor and
// a few multiplies an element): saving them was two more values an element to write and read back,
// and that traffic, not the arithmetic, made the gate cost 15% over the LSTM's loop.
constexpr int64_t kSaved = 6;

// One row's time gate, as cells/phased_lstm.py's time_gate, into k[0..H) and its cycle (t - s)/τ into
// cycles[0..H) (a row's scratch: it stays in L1). The forward and backward passes both call this,
// so they take the same branch for every element.
//   φ = cycle - ⌊cycle⌋;  k = 2φ/r_on (φ < r_on/2), 2 - 2φ/r_on (φ < r_on), leak·φ (otherwise)
template <typename T>
inline void time_gate_row(T time, const T* __restrict__ shift, const T* __restrict__ inv_period, const T* __restrict__ inv_ratio_on,
                          T leak, T* __restrict__ k, T* __restrict__ cycles, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T cycle = (time - shift[j]) * inv_period[j];
    const T phase = cycle - std::floor(cycle);
    const T inv_r = inv_ratio_on[j];
    const T opening = T(2) * phase * inv_r;  // 2φ/r_on: k rises with it to 1 at φ = r_on/2, falls back to 0 at r_on
    const bool open = inv_r > T(0);  // r_on ≤ 0 (a learned value may cross 0): always closed, as the reference
    cycles[j] = cycle;
    k[j] = open && opening < T(1) ? opening : (open && opening < T(2) ? T(2) - opening : leak * phase);
  }
}

// The per-unit gate parameters of one call, as the loops read them (1/τ and 1/r_on: a multiply an
// element instead of a divide), and a (B, 2H) scratch for each row's k and cycle.
template <typename T>
struct GateRows {
  const T* times;  // the step's (B,), or null: no gate (the plain LSTM)
  const T* inv_period;
  const T* shift;
  const T* inv_ratio_on;
  T leak;
  T* scratch;
  // Row b's k (first H) and cycle (next H), computed now.
  T* compute(int64_t b, int64_t H) const {
    T* row = scratch + 2 * b * H;
    time_gate_row(times[b], shift, inv_period, inv_ratio_on, leak, row, row + H, H);
    return row;
  }
};

// kGated = false is the plain LSTM (k ≡ 1): the same loop, for torch.compile (see cells/lstm.py).
template <typename T, bool kGated>
void forward_rows(const T* __restrict__ pre, const GateRows<T>& gate, const T* __restrict__ h_prev, const T* __restrict__ c_prev,
                  T* __restrict__ h_next, T* __restrict__ c_next, T* __restrict__ out, T* __restrict__ saved, const bool* keep,
                  int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
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
      for (int64_t j = 0; j < kSaved * H; ++j) saved[kSaved * b * H + j] = T(0);  // every output defined
      continue;
    }
    const T* __restrict__ p = pre + 4 * b * H;
    T* __restrict__ s = saved + kSaved * b * H;
    // Activations first, in simple loops (gcc vectorises these; one fused loop it would not).
    for (int64_t j = 0; j < 2 * H; ++j) s[j] = sigmoid(p[j]);
    for (int64_t j = 2 * H; j < 3 * H; ++j) s[j] = tanh(p[j]);
    for (int64_t j = 3 * H; j < 4 * H; ++j) s[j] = sigmoid(p[j]);
    const T* __restrict__ k = kGated ? gate.compute(b, H) : nullptr;
    // Disjoint slices of one saved row: restrict-qualified so gcc knows the stores miss the loads.
    const T* __restrict__ gi = s;
    const T* __restrict__ gf = s + H;
    const T* __restrict__ gg = s + 2 * H;
    const T* __restrict__ go = s + 3 * H;
    T* __restrict__ tanh_cs = s + 4 * H;
    T* __restrict__ proposed = s + 5 * H;
    for (int64_t j = 0; j < H; ++j) proposed[j] = gf[j] * cp[j] + gi[j] * gg[j];
    for (int64_t j = 0; j < H; ++j) tanh_cs[j] = tanh(proposed[j]);
    for (int64_t j = 0; j < H; ++j) {
      const T h = kGated ? k[j] * (go[j] * tanh_cs[j]) + (T(1) - k[j]) * hp[j] : go[j] * tanh_cs[j];
      cn[j] = kGated ? k[j] * proposed[j] + (T(1) - k[j]) * cp[j] : proposed[j];
      hn[j] = h;
      o[j] = h;
    }
  }
}

// g_h, g_c hold dL/dh_t, dL/dc_t on entry; on return g_c holds dL/dc_{t-1} and g_h the part of
// dL/dh_{t-1} that does not pass through W (each element is read before it is written).
// Also writes, per unit, dL/dk (g_k), which accumulate_gate_rows carries on to the gate's parameters,
// and leaves each row's recomputed k and cycle in gate.scratch for it.
template <typename T, bool kGated>
void backward_rows(const T* __restrict__ g_out, T* g_h, T* g_c, const T* __restrict__ saved, const T* __restrict__ h_prev,
                   const T* __restrict__ c_prev, const GateRows<T>& gate, T* __restrict__ g_pre, T* __restrict__ g_k,
                   const bool* keep, int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    T* __restrict__ gp = g_pre + 4 * b * H;
    T* __restrict__ gk_row = g_k + b * H;
    if (keep && !keep[b]) {  // the step did not happen: the state's gradients pass through
      for (int64_t j = 0; j < 4 * H; ++j) gp[j] = T(0);  // (accumulate_gate_rows skips the row's gate)
      continue;
    }
    const T* __restrict__ go = g_out + b * H;
    const T* __restrict__ hp = h_prev + b * H;
    const T* __restrict__ cp = c_prev + b * H;
    const T* __restrict__ s = saved + kSaved * b * H;
    const T* __restrict__ kb = kGated ? gate.compute(b, H) : nullptr;
    T* gh = g_h + b * H;
    T* gc = g_c + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T dh = gh[j] + go[j], dc = gc[j];
      const T i = s[j], f = s[H + j], g = s[2 * H + j], og = s[3 * H + j], tanh_c = s[4 * H + j], c_proposed = s[5 * H + j];
      const T k = kGated ? kb[j] : T(1);
      const T dh_proposed = dh * k;
      if constexpr (kGated) gk_row[j] = dh * (og * tanh_c - hp[j]) + dc * (c_proposed - cp[j]);
      const T dc_proposed = dc * k + dh_proposed * og * (T(1) - tanh_c * tanh_c);
      gp[j] = dc_proposed * g * i * (T(1) - i);
      gp[H + j] = dc_proposed * cp[j] * f * (T(1) - f);
      gp[2 * H + j] = dc_proposed * i * (T(1) - g * g);
      gp[3 * H + j] = dh_proposed * tanh_c * og * (T(1) - og);
      gc[j] = dc * (T(1) - k) + dc_proposed * f;
      gh[j] = dh * (T(1) - k);
    }
  }
}

// Carries one step's dL/dk through the gate, from the cycle backward_rows left in gate.scratch (the
// same φ as the forward's, so the same branch), into the per-row sums over time (rows are each one thread's, so no two threads
// touch a row), and writes the timestamps' gradient of the step:
//   ∂k/∂φ = 2/r_on, -2/r_on, α;  ∂k/∂r_on = -2φ/r_on², 2φ/r_on², 0  (rising, falling, closed; ∂φ/∂cycle = 1)
//   cycle = (t - s) / τ:  ∂/∂t = 1/τ,  ∂/∂s = -1/τ,  ∂/∂τ = -cycle/τ
// g_cycle (B, H) is scratch for each row's dL/dcycle / τ.
template <typename T>
void accumulate_gate_rows(const T* __restrict__ g_k, const GateRows<T>& gate, T* __restrict__ g_cycle, T* __restrict__ sum_shift,
                          T* __restrict__ sum_period, T* __restrict__ sum_ratio, T* __restrict__ g_times, const bool* keep,
                          int64_t b_begin, int64_t b_end, int64_t H) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    if (keep && !keep[b]) {
      g_times[b] = T(0);
      continue;
    }
    const T* __restrict__ gk = g_k + b * H;
    const T* __restrict__ cycles = gate.scratch + 2 * b * H + H;
    const T* __restrict__ inv_period = gate.inv_period;
    const T* __restrict__ inv_ratio_on = gate.inv_ratio_on;
    const T leak = gate.leak;
    T* __restrict__ shift = sum_shift + b * H;
    T* __restrict__ tau = sum_period + b * H;
    T* __restrict__ ratio = sum_ratio + b * H;
    T* __restrict__ gcy = g_cycle + b * H;
    for (int64_t j = 0; j < H; ++j) {
      const T cycle = cycles[j], inv_r = inv_ratio_on[j];
      const T phase = cycle - std::floor(cycle);
      const T opening = T(2) * phase * inv_r;  // as the forward's, so the same branch
      const bool open = inv_r > T(0), rising = open && opening < T(1), falling = open && opening < T(2);
      const T by_cycle = gk[j] * (rising ? T(2) * inv_r : (falling ? T(-2) * inv_r : leak)) * inv_period[j];
      gcy[j] = by_cycle;
      shift[j] -= by_cycle;
      tau[j] -= by_cycle * cycle;
      ratio[j] += gk[j] * (rising ? -opening * inv_r : (falling ? opening * inv_r : T(0)));
    }
    g_times[b] = row_sum(gcy, H);
  }
}

// The Phased LSTM's time gate: timestamps (T, B) and per-unit τ, s, r_on, α; undefined for the plain LSTM.
struct Gate {
  at::Tensor times, period, shift, ratio_on;
  double leak = 0.0;
};

// The gate as the loops read it: checked, 1/τ and 1/r_on computed once a call, and the rows' scratch.
struct PreparedGate {
  at::Tensor times, inv_period, shift, inv_ratio_on, scratch;
  double leak;
};

PreparedGate prepare_gate(const Gate& gate, int64_t T, int64_t B, int64_t H, const at::TensorOptions& options, const char* op) {
  for (const auto& [tensor, name] : {std::pair{&gate.period, "period"}, {&gate.shift, "shift"}, {&gate.ratio_on, "ratio_on"}}) {
    check_shape(*tensor, {H}, name, op);
  }
  TORCH_CHECK(gate.times.is_contiguous() && gate.times.sizes() == at::IntArrayRef({T, B}), op, ": times must be contiguous (T, B)");
  for (const auto& [tensor, name] : {std::pair{&gate.times, "times"}, {&gate.period, "period"}, {&gate.shift, "shift"}, {&gate.ratio_on, "ratio_on"}}) {
    TORCH_CHECK(tensor->scalar_type() == options.dtype(), op, ": ", name, " must be ", options.dtype(), " like the loop's other inputs, got ",
                tensor->scalar_type());
  }
  // 1/r_on is 0 where r_on ≤ 0 (a closed unit), not ±∞: the loops test `1/r_on > 0` and never meet ∞ or NaN.
  const auto inv_ratio_on = at::where(gate.ratio_on > 0, gate.ratio_on.reciprocal(), at::zeros_like(gate.ratio_on)).contiguous();
  return {gate.times, gate.period.reciprocal().contiguous(), gate.shift.contiguous(), inv_ratio_on, at::empty({B, 2 * H}, options), gate.leak};
}

// Step t's view of a prepared gate (no gate: null pointers, never read).
template <typename T>
GateRows<T> gate_rows(const PreparedGate* gate, int64_t t, int64_t B) {
  if (gate == nullptr) return {nullptr, nullptr, nullptr, nullptr, T(0), nullptr};
  return {gate->times.data_ptr<T>() + t * B, gate->inv_period.data_ptr<T>(), gate->shift.data_ptr<T>(),
          gate->inv_ratio_on.data_ptr<T>(), static_cast<T>(gate->leak), gate->scratch.data_ptr<T>()};
}

// Both loops' forward pass; `gate` is the Phased LSTM's, absent for the plain LSTM.
template <bool kGated>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward(
    const at::Tensor& projected, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& keep, const Gate& gate, const char* op) {
  PlainKernelGuard guard;
  const int64_t T = projected.size(0), B = projected.size(1), H = h0.size(1);
  check_time_major(projected, 4, H, op);
  check_shape(c0, {B, H}, "c0", op);
  check_shape(weight_hh, {4 * H, H}, "weight_hh", op);
  std::optional<PreparedGate> prepared;
  if constexpr (kGated) prepared = prepare_gate(gate, T, B, H, projected.options(), op);
  auto outputs = at::empty({T, B, H}, projected.options());
  auto saved = at::empty({T, B, kSaved * H}, projected.options());
  auto hs = at::empty({T + 1, B, H}, projected.options());  // h, c before each step, and the last
  auto cs = at::empty({T + 1, B, H}, projected.options());
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  auto pre = at::empty({B, 4 * H}, projected.options());  // one step's gates, reused (stays in cache)
  const auto weight = weight_hh.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, op);
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "lstm_loops_forward", [&] {
    scalar_t *const h = hs.data_ptr<scalar_t>(), *const c = cs.data_ptr<scalar_t>(), *const out = outputs.data_ptr<scalar_t>();
    scalar_t *const sv = saved.data_ptr<scalar_t>(), *const pre_all = pre.data_ptr<scalar_t>();
    const scalar_t *const proj = projected.data_ptr<scalar_t>(), *const w = weight.data_ptr<scalar_t>();
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {  // each block of rows runs the whole loop
      for (int64_t t = 0; t < T; ++t) {
        const int64_t step = t * B * H;  // offset of step t in (T, B, H) buffers
        scalar_t* pre_rows = pre_all + b0 * 4 * H;  // pre = projected_t + h_{t-1} Wᵀ
        std::memcpy(pre_rows, proj + 4 * (step + b0 * H), (b1 - b0) * 4 * H * sizeof(scalar_t));
        gemm_accumulate<scalar_t>(b1 - b0, 4 * H, H, h + step + b0 * H, H, w, true, pre_rows, 4 * H);
        forward_rows<scalar_t, kGated>(pre_all, gate_rows<scalar_t>(prepared ? &*prepared : nullptr, t, B), h + step, c + step,
                                       h + step + B * H, c + step + B * H, out + step, sv + kSaved * step,
                                       step_keep(keep_ptr, t, B), b0, b1, H);
      }
    });
  });
  return {outputs, hs[T].clone(), cs[T].clone(), saved, hs, cs};
}

// Both loops' backward pass: the gradients of projected, h0, c0 and W, and for the Phased LSTM
// those of the timestamps and of τ, s, r_on (`gate`: the forward's; k and the cycle are recomputed).
template <bool kGated>
std::vector<at::Tensor> run_backward(const at::Tensor& grad_outputs, const at::Tensor& grad_h, const at::Tensor& grad_c,
                                     const at::Tensor& weight_hh, const c10::optional<at::Tensor>& keep, const at::Tensor& saved,
                                     const at::Tensor& hs, const at::Tensor& cs, const Gate& gate, const char* op) {
  PlainKernelGuard guard;
  const int64_t T = grad_outputs.size(0), B = grad_outputs.size(1), H = grad_outputs.size(2);
  check_shape(saved, {T, B, kSaved * H}, "saved", op);
  auto grad_pre = at::empty({T, B, 4 * H}, grad_outputs.options());
  std::optional<PreparedGate> prepared;
  at::Tensor grad_k, grad_cycle, sums, grad_times;
  if constexpr (kGated) {
    prepared = prepare_gate(gate, T, B, H, grad_outputs.options(), op);
    grad_k = at::empty({B, H}, grad_outputs.options());  // one step's, reused
    grad_cycle = at::empty({B, H}, grad_outputs.options());
    sums = at::zeros({3, B, H}, grad_outputs.options());  // per row, over time: -dL/ds, -dL/dτ, dL/dr_on
    grad_times = at::empty({T, B}, grad_outputs.options());
  }
  auto g_h = grad_h.contiguous().clone();
  auto g_c = grad_c.contiguous().clone();
  const auto g_out = grad_outputs.contiguous();
  const auto weight = weight_hh.contiguous();
  const bool* keep_ptr = keep_pointer(keep, T, B, op);
  AT_DISPATCH_FLOATING_TYPES(grad_outputs.scalar_type(), "lstm_loops_backward", [&] {
    const auto pointer = [](const at::Tensor& x) { return x.defined() ? x.data_ptr<scalar_t>() : nullptr; };
    const scalar_t *const go = g_out.data_ptr<scalar_t>(), *const sv = saved.data_ptr<scalar_t>(), *const w = weight.data_ptr<scalar_t>();
    const scalar_t *const h = hs.data_ptr<scalar_t>(), *const c = cs.data_ptr<scalar_t>();
    scalar_t *const gh = g_h.data_ptr<scalar_t>(), *const gc = g_c.data_ptr<scalar_t>(), *const gp = grad_pre.data_ptr<scalar_t>();
    scalar_t *const gk = pointer(grad_k), *const gcy = pointer(grad_cycle), *const gt = pointer(grad_times);
    scalar_t *const sum = pointer(sums);
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t step = t * B * H;  // offset of step t in (T, B, H) buffers
        const auto rows = gate_rows<scalar_t>(prepared ? &*prepared : nullptr, t, B);
        backward_rows<scalar_t, kGated>(go + step, gh, gc, sv + kSaved * step, h + step, c + step, rows, gp + 4 * step, gk,
                                        step_keep(keep_ptr, t, B), b0, b1, H);
        if constexpr (kGated) {
          accumulate_gate_rows<scalar_t>(gk, rows, gcy, sum, sum + B * H, sum + 2 * B * H, gt + t * B, step_keep(keep_ptr, t, B),
                                         b0, b1, H);
        }
        // dh_{t-1} = (the direct part, written in place) + dpre W
        gemm_accumulate<scalar_t>(b1 - b0, H, 4 * H, gp + 4 * (step + b0 * H), 4 * H, w, false, gh + b0 * H, H);
      }
    });
  });
  const auto grad_weight_hh = grad_pre.view({T * B, 4 * H}).t().mm(hs.narrow(0, 0, T).reshape({T * B, H}));
  if constexpr (!kGated) {
    return {grad_pre, g_h, g_c, grad_weight_hh};
  } else {
    const auto by_unit = sums.sum(1);  // (3, H)
    return {grad_pre, g_h, g_c, grad_weight_hh, grad_times, by_unit[1], by_unit[0], by_unit[2]};
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> phased_lstm_loop(
    const at::Tensor& projected, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_hh,
    const at::Tensor& times, const at::Tensor& period, const at::Tensor& shift, const at::Tensor& ratio_on,
    const c10::optional<at::Tensor>& keep, double leak) {
  return run_forward<true>(projected, h0, c0, weight_hh, keep, Gate{times, period, shift, ratio_on, leak}, "phased_lstm_loop");
}

std::vector<at::Tensor> phased_lstm_loop_backward(const at::Tensor& grad_outputs, const at::Tensor& grad_h,
                                                  const at::Tensor& grad_c, const at::Tensor& weight_hh,
                                                  const c10::optional<at::Tensor>& keep, const at::Tensor& saved,
                                                  const at::Tensor& hs, const at::Tensor& cs, const at::Tensor& times,
                                                  const at::Tensor& period, const at::Tensor& shift, const at::Tensor& ratio_on,
                                                  double leak) {
  return run_backward<true>(grad_outputs, grad_h, grad_c, weight_hh, keep, saved, hs, cs, Gate{times, period, shift, ratio_on, leak},
                            "phased_lstm_loop_backward");
}

// The plain LSTM's loop: the Phased LSTM's with the gate always open.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_loop(
    const at::Tensor& projected, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& keep) {
  return run_forward<false>(projected, h0, c0, weight_hh, keep, Gate{}, "lstm_loop");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_loop_backward(
    const at::Tensor& grad_outputs, const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& weight_hh,
    const c10::optional<at::Tensor>& keep, const at::Tensor& saved, const at::Tensor& hs, const at::Tensor& cs) {
  const auto grads = run_backward<false>(grad_outputs, grad_h, grad_c, weight_hh, keep, saved, hs, cs, Gate{}, "lstm_loop_backward");
  return {grads[0], grads[1], grads[2], grads[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnzoo, CPU, m) {
  m.impl(RNNZOO_OP("phased_lstm_loop"), &phased_lstm_loop);
  m.impl(RNNZOO_OP("phased_lstm_loop_backward"), &phased_lstm_loop_backward);
  m.impl(RNNZOO_OP("lstm_loop"), &lstm_loop);
  m.impl(RNNZOO_OP("lstm_loop_backward"), &lstm_loop_backward);
}

}  // namespace rnnzoo
