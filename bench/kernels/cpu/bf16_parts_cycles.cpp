// The AVX512_BF16 bf16-parts decode kernels (gemm_nibble_bf16.cpp: int4 / MXFP4; gemm_avx512_bf16.cpp: int4 + 2:4)
// timed without Python: one token, 4096 x 14336 from DRAM (3 weight copies rotated: 90+ MB, past the LLC) and 32
// rows of it in L2 (cycles per 32 inputs of a row at the clock given, GHz), with the relative error of 64 rows
// against a double sum of the scalar reference decoder. The "C++ harness" figures of docs/cpu-kernels.md.
//
//   g++ -O3 -std=c++17 -mf16c -Icsrc/cpu -o /tmp/bf16_parts_cycles bench/kernels/cpu/bf16_parts_cycles.cpp \
//       csrc/cpu/gemm_nibble_bf16.cpp csrc/cpu/gemm_avx512_bf16.cpp
//   /tmp/bf16_parts_cycles int4 fp32 3.67      # layout: int4 | mxfp4 | int4_semi24; activations: fp32 | bf16 | 16bit
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "packed_cpu.h"

using namespace sparsekit::cpu;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  const std::string layout = argc > 1 ? argv[1] : "int4", acts = argc > 2 ? argv[2] : "fp32";
  const double ghz = argc > 3 ? std::atof(argv[3]) : 3.67;
  if ((layout != "int4" && layout != "mxfp4" && layout != "int4_semi24") ||
      (acts != "fp32" && acts != "bf16" && acts != "16bit")) {
    std::fprintf(stderr, "usage: %s int4|mxfp4|int4_semi24 fp32|bf16|16bit [GHz]\n", argv[0]);
    return 2;
  }
  constexpr int64_t K = 14336, N = 4096, kCopies = 3;
  const bool kept = layout == "int4_semi24";
  const int64_t code_bytes = kept ? K / 4 : K / 2;
  std::srand(1);
  std::vector<std::vector<uint8_t>> codes(kCopies, std::vector<uint8_t>(N * code_bytes)), meta(kCopies),
      e8m0(kCopies);
  std::vector<std::vector<uint16_t>> scales(kCopies);
  const uint8_t pairs[6] = {0 | 1 << 2, 0 | 2 << 2, 0 | 3 << 2, 1 | 2 << 2, 1 | 3 << 2, 2 | 3 << 2};
  for (int i = 0; i < kCopies; ++i) {
    for (auto& b : codes[i]) b = static_cast<uint8_t>(std::rand());
    if (kept) {
      meta[i].resize(N * K / 8);
      for (auto& b : meta[i]) b = static_cast<uint8_t>(pairs[std::rand() % 6] | pairs[std::rand() % 6] << 4);
    }
    if (layout == "mxfp4") {
      e8m0[i].resize(N * K / 32);
      for (auto& e : e8m0[i]) e = static_cast<uint8_t>(120 + std::rand() % 8);
    } else {
      scales[i].resize(N * K / 128);
      for (auto& h : scales[i]) h = _cvtss_sh(0.01f + (std::rand() % 100) * 1e-4f, 0);
    }
  }
  std::vector<float> x(K);
  for (auto& v : x) {
    v = (std::rand() / static_cast<float>(RAND_MAX) - 0.5f) * 3.0f;
    uint32_t b;
    std::memcpy(&b, &v, 4);
    b &= acts == "bf16" ? 0xFFFF0000u : acts == "16bit" ? 0xFFFFFF00u : 0xFFFFFFFFu;
    std::memcpy(&v, &b, 4);
  }
  auto packed = [&](int i) {
    Packed p;
    p.kind = kept ? Kind::kInt4Semi24 : layout == "mxfp4" ? Kind::kMXFP4 : Kind::kInt4;
    p.n = N;
    p.k = K;
    p.codes = codes[i].data();
    p.meta = kept ? meta[i].data() : nullptr;
    p.e8m0 = layout == "mxfp4" ? e8m0[i].data() : nullptr;
    p.scales = layout == "mxfp4" ? nullptr : scales[i].data();
    p.group = layout == "mxfp4" ? 0 : 128;
    return p;
  };
  auto rows = kept ? rows_int4_semi24_bf16 : rows_nibble_bf16;
  const Packed p0 = packed(0);
  BfActs a;
  double prep_us = 1e9;  // the fastest of 20 preparations (the first one also pays the buffer's page faults)
  for (int it = 0; it < 20; ++it) {
    const double t0 = now();
    if (!(kept ? prepare_kept_bf16(p0, x.data(), 1, a) : prepare_nibble_bf16(p0, x.data(), 1, a))) {
      std::printf("%s %s: the kernel does not serve these activations (the fp32 kernel does)\n", layout.c_str(),
                  acts.c_str());
      return 0;
    }
    prep_us = std::min(prep_us, (now() - t0) * 1e6);
  }
  std::vector<float> out(N);
  rows(p0, a, 1, out.data(), nullptr, 0, N);
  double err = 0, ref = 0;
  for (int64_t n = 0; n < 64; ++n) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += static_cast<double>(weight_at(p0, n, k)) * x[k];
    err += (out[n] - s) * (out[n] - s);
    ref += s * s;
  }
  double dram = 1e9;
  for (int it = 0; it < 30; ++it) {
    const Packed p = packed(it % kCopies);
    const double t = now();
    rows(p, a, 1, out.data(), nullptr, 0, N);
    dram = std::min(dram, now() - t);
  }
  constexpr int64_t kL2Rows = 32;
  double l2 = 1e9;
  for (int it = 0; it < 2000; ++it) {
    const double t = now();
    rows(p0, a, 1, out.data(), nullptr, 0, kL2Rows);
    l2 = std::min(l2, now() - t);
  }
  std::printf("%s %s: %d parts (prepared in %.1f us), rel err %.2e, DRAM %.3f ms, L2 %.2f cycles per 32 inputs\n",
              layout.c_str(), acts.c_str(), a.parts, prep_us, std::sqrt(err / ref), dram * 1e3,
              l2 * ghz * 1e9 / (kL2Rows * K / 32.0));
  return 0;
}
