// The LIF family's math in fp32 (lif_cpu_kernels.h), which the 16-bit storage types share
// through their row conversions, and the entry points for float storage.
#include "lif_cpu_kernels.h"

namespace tks {
namespace cpu {
template <>
const Rows<float>& rows_of<float>() {
  static const Rows<float> rows{true, nullptr, nullptr, nullptr};
  return rows;
}
}  // namespace cpu
}  // namespace tks

TKS_LIF_FAMILY_INSTANTIATE(float)
TKS_LIF_CPU_INSTANTIATE(float)
