// Threads for the CPU kernels: OpenMP, with the thread count the caller passes on every
// call (Python passes torch.get_num_threads()). The library links the OpenMP runtime
// by its soname (libgomp.so.1), so inside a process that has loaded torch it is
// torch's own runtime and thread pool, not a second pool competing for the cores.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tks {
namespace cpu {

// The thread count of the current call (set by the C API for the call's duration).
int num_threads();

class ThreadCountScope {
 public:
  explicit ThreadCountScope(int n);
  ~ThreadCountScope();
  ThreadCountScope(const ThreadCountScope&) = delete;
  ThreadCountScope& operator=(const ThreadCountScope&) = delete;

 private:
  int previous_;
};

// f(b, e) over contiguous pieces of [begin, end), at least `grain` items each (as
// at::parallel_for): one piece per thread, or the whole range inline when it is small,
// when one thread is asked for, or inside a parallel region already.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int64_t tasks = (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1);
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), tasks));
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
    {
      const int64_t nth = omp_get_num_threads();
      const int64_t piece = (n + nth - 1) / nth;
      const int64_t b = begin + omp_get_thread_num() * piece;
      const int64_t e = std::min(end, b + piece);
      if (b < e) f(b, e);
    }
    return;
  }
#endif
  (void)threads;
  f(begin, end);
}

}  // namespace cpu
}  // namespace tks
