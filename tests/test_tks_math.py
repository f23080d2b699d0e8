"""csrc/tks_math.h on the host: the pieces the CUDA kernel relies on beyond what the
CPU kernel's tests cover. A small C++ program (built here with the system compiler)
decomposes rows the way tks_cuda.cu does (32 lanes with a shuffle-down merge tree;
256 threads with a shared-memory merge tree) and checks the online statistics against
direct two-pass values: log-sum-exp, torch.argmax's first-index rule on ties, <q, O>,
and the polynomial exp_f32 against std::exp.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CXX = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <random>
#include <vector>
#include "tks_math.h"

using tks::loss::OnlineArgLSE;
using tks::loss::OnlineLSEDot;
static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { ++failures; std::printf("FAIL: " __VA_ARGS__); std::printf("\n"); } } while (0)

// As warp_merge in tks_cuda.cu: lane i takes classes i, i+32, ...; then lane i merges
// lane i+delta for delta = 16, 8, 4, 2, 1 (all lanes at once, from the old values).
OnlineArgLSE<float> warp_row(const std::vector<float>& row) {
  OnlineArgLSE<float> lane[32];
  for (int l = 0; l < 32; ++l) {
    lane[l].init();
    for (size_t c = l; c < row.size(); c += 32) lane[l].add(row[c], (int64_t)c);
  }
  for (int delta = 16; delta > 0; delta >>= 1) {
    OnlineArgLSE<float> next[32];
    for (int l = 0; l < 32; ++l) {
      next[l] = lane[l];
      if (l + delta < 32) next[l].merge(lane[l + delta]);
    }
    for (int l = 0; l < 32; ++l) lane[l] = next[l];
  }
  return lane[0];
}

// As block_merge: thread i takes classes i, i+256, ...; a halving tree in shared memory.
OnlineLSEDot<double> block_dot(const std::vector<double>& x, const std::vector<double>& w) {
  std::vector<OnlineLSEDot<double>> t(256);
  for (int i = 0; i < 256; ++i) {
    t[i].init();
    for (size_t c = i; c < x.size(); c += 256) t[i].add(x[c], w[c]);
  }
  for (int half = 128; half > 0; half >>= 1)
    for (int i = 0; i < half; ++i) t[i].merge(t[i + half]);
  return t[0];
}

int main() {
  std::mt19937 gen(1234);
  std::normal_distribution<float> normal(0.f, 3.f);
  const int sizes[] = {1, 2, 5, 31, 32, 33, 100, 257, 1000, 2000};
  for (int C : sizes) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> row(C);
      for (auto& v : row) v = normal(gen);
      if (trial % 4 == 1 && C > 3) row[C - 1] = row[C / 2] = row[1] = 50.f;  // ties: first index wins
      if (trial % 4 == 2) row[0] = -INFINITY;  // a masked class (C = 1: an all -inf row)
      if (trial % 4 == 3) for (auto& v : row) v = std::round(v);             // many ties
      double mx = -INFINITY; int64_t arg = 0;
      for (int c = 0; c < C; ++c) if (row[c] > mx) { mx = row[c]; arg = c; }
      double s = 0; for (float v : row) s += std::exp((double)v - mx);
      const double lse = mx == -INFINITY ? -INFINITY : mx + std::log(s);
      const OnlineArgLSE<float> got = warp_row(row);
      CHECK(got.arg == arg, "C=%d trial=%d argmax %lld, want %lld", C, trial, (long long)got.arg, (long long)arg);
      const double err = lse == -INFINITY ? (got.lse.value() == lse ? 0.0 : 1.0)
                                          : std::fabs(got.lse.value() - lse) / std::fmax(1.0, std::fabs(lse));
      CHECK(err < 2e-6, "C=%d trial=%d lse %.9g, want %.9g", C, trial, (double)got.lse.value(), lse);
    }
    std::vector<double> x(C), w(C);
    for (int c = 0; c < C; ++c) { x[c] = normal(gen); w[c] = normal(gen); }
    double mx = -INFINITY; for (double v : x) mx = std::fmax(mx, v);
    double s = 0, d = 0; for (int c = 0; c < C; ++c) { const double e = std::exp(x[c] - mx); s += e; d += e * w[c]; }
    const OnlineLSEDot<double> got = block_dot(x, w);
    CHECK(std::fabs(got.max + std::log(got.sum) - (mx + std::log(s))) < 1e-12, "C=%d lse of z", C);
    CHECK(std::fabs(got.weighted_mean() - d / s) < 1e-12 * (1 + std::fabs(d / s)), "C=%d <q, O>", C);
  }
  // exp_f32: within 2 ulp of exp over the range the kernels use; 0 below, NaN kept.
  for (float x = -87.0f; x < 88.0f; x += 0.001953125f) {
    const double want = std::exp((double)x);
    const double err = std::fabs(tks::loss::exp_f32(x) - want) / want;
    if (err > 2.4e-7) { CHECK(false, "exp_f32(%.9g) relative error %.3g", x, err); break; }
  }
  CHECK(tks::loss::exp_f32(-INFINITY) == 0.f, "exp_f32(-inf) must be 0");
  CHECK(tks::loss::exp_f32(-200.f) == 0.f, "exp_f32(-200) must be 0");
  CHECK(std::isnan(tks::loss::exp_f32(NAN)), "exp_f32(nan) must be nan");
  std::printf(failures ? "%d failures\n" : "OK\n", failures);
  return failures ? 1 : 0;
}
"""


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_online_statistics_and_exp_on_the_host(tmp_path):
    src = tmp_path / "tks_math_test.cpp"
    exe = tmp_path / "tks_math_test"
    src.write_text(PROGRAM)
    build = subprocess.run(
        [CXX, "-std=c++17", "-O2", "-Wall", "-Wextra", "-I", os.path.join(ROOT, "csrc"), str(src), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr, build.stderr
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stdout
