// How fast one core reads a weight from DRAM on 4 KiB pages and on 2 MiB pages, in the access patterns of the
// decode kernels: one stream (a row after another, or a layout interleaved into one stream), and R rows a step
// (R streams 14 KB apart, as the 2:4 bf16 kernel reads at K = 14336: 14336 bytes of values and 1792 of positions
// per row), with and without a software prefetch of the rows R on (into L1: T0, into L2: T1).
//
// On 4 KiB pages the hardware prefetchers stop at every page boundary and each page costs a TLB walk, so one
// stream can run slower than several; on 2 MiB pages one stream runs fastest: a layout interleaved into one
// stream pays only on huge pages (sparsekit.utils.pages, SPARSEKIT_HUGE_PAGES=1). The Zen 4 VM's figures: the
// pages section of docs/cpu-kernels.md.
//
//   g++ -O2 -march=native -o /tmp/page_streams bench/kernels/cpu/page_streams.cpp
//   /tmp/page_streams 4k; /tmp/page_streams 2m
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static const int64_t kRows = 4096, kValues = 14336, kMeta = 1792;  // bytes per row: 2:4 bf16 at K = 14336
static const int64_t kHuge = 2 << 20;

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 2 MiB-aligned, so that huge pages can back all of it when asked; the slack covers the reads R rows past the end
static uint8_t* alloc(int64_t bytes, bool huge, int fill) {
  const int64_t n = (bytes + (1 << 20) + kHuge - 1) / kHuge * kHuge;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(kHuge, n));
  if (p == nullptr) std::abort();
  if (huge) madvise(p, n, MADV_HUGEPAGE);  // before the first touch: the faults then take huge pages
  std::memset(p, fill, n);
  return p;
}

// R rows a step, a line of each row's values and every 8th step a line of its positions; PF: 0 none, 1 the rows R
// on into L1, 2 into L2, 3 2 KB ahead in the same row into L1
template <int R, int PF>
__attribute__((noinline)) __m512i rows(const uint8_t* v, const uint8_t* m) {
  __m512i acc = _mm512_setzero_si512();
  for (int64_t n = 0; n < kRows; n += R)
    for (int64_t k = 0; k < kValues; k += 64)
      for (int r = 0; r < R; ++r) {
        const uint8_t* vr = v + (n + r) * kValues;
        const uint8_t* mr = m + (n + r) * kMeta;
        if (PF == 1 || PF == 2) {
          constexpr auto hint = PF == 1 ? _MM_HINT_T0 : _MM_HINT_T1;
          _mm_prefetch(reinterpret_cast<const char*>(vr + R * kValues + k), hint);
          if ((k & 511) == 0) _mm_prefetch(reinterpret_cast<const char*>(mr + R * kMeta + k / 8), hint);
        } else if (PF == 3) {
          _mm_prefetch(reinterpret_cast<const char*>(vr + 2048 + k), _MM_HINT_T0);
          if ((k & 511) == 0) _mm_prefetch(reinterpret_cast<const char*>(mr + 256 + k / 8), _MM_HINT_T0);
        }
        acc = _mm512_add_epi32(acc, _mm512_loadu_si512(vr + k));
        long long mw;
        std::memcpy(&mw, mr + k / 8, 8);
        acc = _mm512_add_epi32(acc, _mm512_set1_epi64(mw));
      }
  return acc;
}

// the same bytes as one stream
__attribute__((noinline)) __m512i linear(const uint8_t* s) {
  __m512i acc = _mm512_setzero_si512();
  for (int64_t o = 0; o < kRows * (kValues + kMeta); o += 64) acc = _mm512_add_epi32(acc, _mm512_loadu_si512(s + o));
  return acc;
}

int main(int argc, char** argv) {
  const bool huge = argc > 1 && std::strcmp(argv[1], "2m") == 0;
  if (argc < 2 || (!huge && std::strcmp(argv[1], "4k") != 0)) {
    std::fprintf(stderr, "usage: %s 4k|2m\n", argv[0]);
    return 2;
  }
  uint8_t* v = alloc(kRows * kValues, huge, 1);
  uint8_t* m = alloc(kRows * kMeta, huge, 2);
  uint8_t* s = alloc(kRows * (kValues + kMeta), huge, 3);
  std::vector<char> flush(128 << 20, 1);  // 4x the L3: each timed read starts from DRAM
  const double bytes = static_cast<double>(kRows * (kValues + kMeta));
  const int reps = 15;
  auto run = [&](const char* name, auto f) {
    std::vector<double> t;
    volatile long long sink = 0;
    for (int i = 0; i < reps; ++i) {
      for (size_t j = 0; j < flush.size(); j += 64) flush[j]++;
      const double a = now();
      const __m512i r = f();
      t.push_back(now() - a);
      sink += _mm512_reduce_add_epi32(r);
    }
    std::sort(t.begin(), t.end());
    std::printf("%-34s best %5.1f  median %5.1f GB/s\n", name, bytes / t[0] / 1e9, bytes / t[reps / 2] / 1e9);
  };
  std::printf("%s pages, %.0f MB per read, one thread\n", huge ? "2 MiB" : "4 KiB", bytes / 1e6);
  run("one stream", [&] { return linear(s); });
  run("1 row a step, 2 KB ahead (T0)", [&] { return rows<1, 3>(v, m); });
  run("4 rows a step, no prefetch", [&] { return rows<4, 0>(v, m); });
  run("4 rows a step, rows ahead (T0)", [&] { return rows<4, 1>(v, m); });
  run("4 rows a step, rows ahead (T1)", [&] { return rows<4, 2>(v, m); });
  run("8 rows a step, rows ahead (T1)", [&] { return rows<8, 2>(v, m); });
  return 0;
}
