// The LIF family's math for bfloat16 storage (lif_cpu_kernels.h: the loops convert each
// value, a shift in and a rounding add out) and its entry points.
#include "lif_cpu_kernels.h"

namespace tks {
namespace cpu {
namespace {
void load_bf16(const void* src, int64_t off, float* dst, int64_t n) {
  const BFloat16* s = static_cast<const BFloat16*>(src) + off;
  for (int64_t i = 0; i < n; ++i) dst[i] = Storage<BFloat16>::load(s[i]);
}
void store_bf16(const float* src, void* dst, int64_t off, int64_t n) {
  BFloat16* d = static_cast<BFloat16*>(dst) + off;
  for (int64_t i = 0; i < n; ++i) d[i] = Storage<BFloat16>::store(src[i]);
}
}  // namespace

// In place: the loops read bf16 itself; load/store are the same conversions for tks_convert_bf16.
template <>
const Rows<float>& rows_of<BFloat16>() {
  static const Rows<float> rows{true, load_bf16, store_bf16, nullptr};
  return rows;
}
}  // namespace cpu
}  // namespace tks

TKS_LIF_FAMILY_INSTANTIATE(tks::BFloat16)
TKS_LIF_CPU_INSTANTIATE(tks::BFloat16)
