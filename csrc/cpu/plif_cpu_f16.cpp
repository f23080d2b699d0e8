// PLIF CPU kernels for c10::Half storage; the kernels are in plif_cpu_kernels.h.
#include "plif_cpu_kernels.h"

TKS_PLIF_CPU_INSTANTIATE(c10::Half)
