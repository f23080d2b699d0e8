// Fewer first-touch page faults on the kernels' own large outputs.
//
// A fresh [T, N] output (spikes, grad_x, ...) comes from PyTorch's CPU allocator, which
// for large sizes maps fresh, untouched memory: the kernel's first write to each 4 KiB
// page then takes a fault (and a zeroing), which on the shared 2-core machine cost about
// two thirds of a [8, 32, 32768] forward+backward. Asking for transparent huge pages on
// the 2 MiB-aligned part of such a buffer before it is first written (madvise
// MADV_HUGEPAGE: advice only, the data is untouched; on already-touched memory it only
// lets khugepaged merge it later) turns 512 faults into one. It applies where the
// system's THP mode is "madvise" (the common default) or "always"; with "never" it is a
// no-op, as is PyTorch's own THP_MEM_ALLOC_ENABLE=1 path, which advises the same.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tks {
namespace cpu {

// Buffers below this size are left alone: they are a few pages, or already warm.
constexpr size_t kHugePageMinBytes = size_t(4) << 20;

inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < kHugePageMinBytes) return;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  // Advice: a failure (EINVAL without THP in the kernel) changes nothing, so it is ignored.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace cpu
}  // namespace tks
