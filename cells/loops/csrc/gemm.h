// The per-step GEMM of the fused CPU loops on raw pointers. Going through at::addmm_out costs a
// dozen tensor views a step (select, narrow, as_strided: ~10% of a training step at H=128,
// B=32); the BLAS torch links (MKL on x86, OpenBLAS on ARM) exports the Fortran sgemm_/dgemm_,
// which take pointers. They are declared weak: where torch's BLAS does not export them (or with
// RNNZOO_BLAS=0 in the environment, which the tests use to hold the two to each other) the loops
// fall back to at::addmm_.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace rnnzoo {

// False where RNNZOO_BLAS=0 (read once).
inline bool blas_allowed() {
  static const bool allowed = [] {
    const char* value = std::getenv("RNNZOO_BLAS");
    return !(value && std::strcmp(value, "0") == 0);
  }();
  return allowed;
}

// out (rows × n, row-major, leading dimension ldo) += a (rows × k, row-major, lda) · op(w), where
// op(w) = wᵀ for w (n × k) when w_transposed (the forward's h Wᵀ), else w itself, (k × n) (the
// backward's dpre W). Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ, which is what is passed.
template <typename T>
void gemm_accumulate(int64_t rows, int64_t n, int64_t k, const T* a, int64_t lda, const T* w, bool w_transposed, T* out,
                     int64_t ldo) {
  const int m_ = static_cast<int>(n), n_ = static_cast<int>(rows), k_ = static_cast<int>(k);
  const int lda_ = static_cast<int>(w_transposed ? k : n), ldb_ = static_cast<int>(lda), ldc_ = static_cast<int>(ldo);
  const char trans_w = w_transposed ? 'T' : 'N', no = 'N';
  const T one = T(1);
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_ && blas_allowed()) return sgemm_(&trans_w, &no, &m_, &n_, &k_, &one, w, &lda_, a, &ldb_, &one, out, &ldc_);
  } else if constexpr (std::is_same_v<T, double>) {
    if (dgemm_ && blas_allowed()) return dgemm_(&trans_w, &no, &m_, &n_, &k_, &one, w, &lda_, a, &ldb_, &one, out, &ldc_);
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto out_t = at::from_blob(out, {rows, n}, {ldo, 1}, options);
  const auto a_t = at::from_blob(const_cast<T*>(a), {rows, k}, {lda, 1}, options);
  const auto w_t = w_transposed ? at::from_blob(const_cast<T*>(w), {n, k}, options).t() : at::from_blob(const_cast<T*>(w), {k, n}, options);
  out_t.addmm_(a_t, w_t);
}

}  // namespace rnnzoo
