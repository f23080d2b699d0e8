// PLIF CPU kernels for tks::BFloat16 storage; the kernels are in plif_cpu_kernels.h.
#include "plif_cpu_kernels.h"

TKS_PLIF_CPU_INSTANTIATE(tks::BFloat16)
