// The LIF family for float16 (IEEE binary16) storage: fp32 math (lif_cpu_f32.cpp) through
// whole-row conversions (lif_cpu_rows16.h).
#include "lif_cpu_rows16.h"

namespace tks {
namespace cpu {
template <>
const Rows<float>& rows_of<Half>() {
  static const Rows<float> rows = [] {
#if defined(TKS_ROWS_AVX2)
    if (rows16::cpu_has_avx2_f16c()) {
      return Rows<float>{false, rows16::load_f16_avx2, rows16::store_f16_avx2, rows16::store_distance<Half>};
    }
#endif
    return Rows<float>{false, rows16::load_scalar<Half>, rows16::store_scalar<Half>,
                       rows16::store_distance<Half>};
  }();
  return rows;
}
}  // namespace cpu
}  // namespace tks

TKS_LIF_CPU_INSTANTIATE(tks::Half)
