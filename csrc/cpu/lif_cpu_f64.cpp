// LIF CPU kernels for double storage; the kernels are in lif_cpu_kernels.h.
#include "lif_cpu_kernels.h"

TKS_LIF_CPU_INSTANTIATE(double)
