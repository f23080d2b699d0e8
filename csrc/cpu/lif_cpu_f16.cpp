// LIF CPU kernels for tks::Half storage; the kernels are in lif_cpu_kernels.h.
#include "lif_cpu_kernels.h"

TKS_LIF_CPU_INSTANTIATE(tks::Half)
