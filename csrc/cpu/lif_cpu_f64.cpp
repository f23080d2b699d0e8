// The LIF family's math in fp64 (lif_cpu_kernels.h) and the entry points for double
// storage. fp64 is gradcheck's type: the baseline instruction set only, no AVX2 clone.
#define TKS_CPU_NO_CLONES 1
#include "lif_cpu_kernels.h"

namespace tks {
namespace cpu {
template <>
const Rows<double>& rows_of<double>() {
  static const Rows<double> rows{true, nullptr, nullptr, nullptr};
  return rows;
}
}  // namespace cpu
}  // namespace tks

TKS_LIF_FAMILY_INSTANTIATE(double)
TKS_LIF_CPU_INSTANTIATE(double)
