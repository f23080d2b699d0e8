// The LIF family for bfloat16 storage: fp32 math (lif_cpu_f32.cpp) through row conversions.
#include "lif_cpu_rows16.h"

namespace tks {
namespace cpu {
template <>
const Rows<float>& rows_of<BFloat16>() {
  static const Rows<float> rows = [] {
#if defined(TKS_ROWS_AVX2)
    if (rows16::cpu_has_avx2_f16c()) {
      return Rows<float>{false, rows16::load_bf16_avx2, rows16::store_bf16_avx2, rows16::store_distance<BFloat16>};
    }
#endif
    return Rows<float>{false, rows16::load_scalar<BFloat16>, rows16::store_scalar<BFloat16>,
                       rows16::store_distance<BFloat16>};
  }();
  return rows;
}
}  // namespace cpu
}  // namespace tks

TKS_LIF_CPU_INSTANTIATE(tks::BFloat16)
