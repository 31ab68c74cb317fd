// AVX-512 BF16 path: 2:4 with bf16 values times bf16 activations (a bf16 model), one vdpbf16ps per 32 kept
// weights and token.
//
// The fp32-activation kernel (kept_bf16_tile, gemm_avx512.cpp) widens each kept value to fp32 and gathers fp32
// activations: per 64 inputs and token 4 activation loads, 2 vpermt2ps and 2 FMAs. With bf16 activations the
// products can stay in bf16 pairs: the 32 kept values of 64 inputs are one zmm as stored (group j's two kept
// values in words 2j, 2j + 1), one vpermt2w gathers the 32 activations they meet from the 64 inputs' two zmm,
// and vdpbf16ps adds both products of each group into one fp32 lane: 2 loads, 1 permute, 1 dot per 64 inputs
// and token. Every product of two bf16 numbers is exact in fp32 (8 + 8 significant bits), so the result is
// the fp32 sum of the exact products, as the fp32 kernel computes it on the same bf16 inputs (vdpbf16ps
// flushes subnormal bf16 inputs and fp32 results to zero; bf16 subnormals are below 1e-38).
//
// At 4-16 tokens the fp32 kernel is bound by its activation loads (4 per 64 inputs and token, shared by one
// row): at 16 tokens on 4096 x 14336 it ran at 0.84x dense fp32 and a third of dense bf16 (oneDNN's
// vdpbf16ps GEMM). Here a step multiplies R = 4 rows by up to 4 tokens (16 accumulators; at one token 8 rows
// where the activations outgrow L1, one row with 4 accumulators where they fit: row_one_token), so 2
// activation loads serve 4 rows, and the rows' bytes come from memory once for all the token
// tiles (rows outer, tiles inner: a block of 4 rows, 4 x 2.25 bytes per input, stays in L2 while its tiles
// pass over it).
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,f16c")
#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {

// Rows a step (kRowsOneToken, kRows, kTokens: decode_rows.h, with the measurement): at one token 8 rows where the
// activations outgrow L1 (8 accumulators + 16 row registers + 2 activations + 3 constants), with more tokens 4 (4
// x 4 accumulators + 8 + 2 + 3).
#include "decode_rows.h"

// The word indices of the 32 activations that the 32 kept values of 64 inputs meet. The metadata qword of the
// 64 inputs holds kept value j's position in its group at bits 2j, 2j + 1; vpmultishiftqb (the qword
// broadcast to every lane) moves each field to the low byte of word j, and vpternlogd keeps its 2 bits and
// ORs in the group's base 4 (j / 2) (whose low 2 bits are 0): 3 instructions for 32 indices.
struct KeptIndex {
  __m512i ctrl, base, three;
  // kept(j): the kept value that word j meets (the identity for the 2:4 bf16 kernel, whose values are one zmm as
  // stored; the int4 + 2:4 kernel decodes its codes in another order, KeptDecode)
  explicit KeptIndex(int (*kept)(int) = [](int j) { return j; }) {
    alignas(64) uint8_t ctrl_b[64] = {};
    alignas(64) uint16_t base_b[32];
    for (int j = 0; j < 32; ++j) {
      ctrl_b[2 * j] = static_cast<uint8_t>(2 * kept(j));
      base_b[j] = static_cast<uint16_t>(4 * (kept(j) / 2));
    }
    ctrl = _mm512_load_si512(ctrl_b);
    base = _mm512_load_si512(base_b);
    three = _mm512_set1_epi16(3);
  }
  __m512i operator()(const uint8_t* meta64) const {
    uint64_t mw;
    std::memcpy(&mw, meta64, 8);
    return of(mw);
  }
  __m512i of(uint64_t mw) const { return of(_mm512_set1_epi64(static_cast<long long>(mw))); }
  // mw: the metadata qword in every lane
  __m512i of(__m512i mw) const {
    const __m512i fields = _mm512_multishift_epi64_epi8(ctrl, mw);
    return _mm512_ternarylogic_epi32(fields, three, base, 0xEA);  // (fields & three) | base
  }
};

// rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 (x: [m, K] bf16 bits) into sums[r * MT + t]; inputs
// [0, k64) only. `ahead`: prefetch the lines of the rows R on (the first tile over a block of rows; the later
// tiles read from L2).
template <int MT, int R>
inline void block(const Packed& p, KeptIndex& ix, const uint16_t* x, int64_t t0, int64_t n, bool ahead,
                  float* sums) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  const uint16_t* values[R];
  const uint8_t* meta[R];
  for (int r = 0; r < R; ++r) {
    values[r] = static_cast<const uint16_t*>(p.values) + (n + r) * (K / 2);
    meta[r] = p.meta + (n + r) * (K / 8);
  }
  __m512 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < k64; k0 += 64) {
    // the constants stay in registers (GCC otherwise reloads them as memory operands every step)
    asm("" : "+v"(ix.ctrl), "+v"(ix.base), "+v"(ix.three));
    __m512i idx[R], w[R];
    for (int r = 0; r < R; ++r) {
      if (ahead) prefetch_kept_bf16<R>(p, values[r], meta[r], k0);  // the rows R on, as kept_bf16_tile does
      idx[r] = ix(meta[r] + k0 / 8);
      w[r] = _mm512_loadu_si512(values[r] + k0 / 2);
    }
    for (int t = 0; t < MT; ++t) {
      const uint16_t* xk = x + (t0 + t) * K + k0;
      const __m512i xa = _mm512_loadu_si512(xk), xb = _mm512_loadu_si512(xk + 32);
      for (int r = 0; r < R; ++r)
        acc[r][t] = _mm512_dpbf16_ps(acc[r][t], (__m512bh)w[r], (__m512bh)_mm512_permutex2var_epi16(xa, idx[r], xb));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) sums[r * MT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

// One token of row n where its activations fit L1 (kSharedActsBytes): one row a step reads the weights as one
// stream, where 8 rows a step read 8 streams 4.5 KB of packed row apart at K = 4096 (the read from DRAM was the
// slower for it). Four accumulators over consecutive steps: with one, each vdpbf16ps waits for the last (a chain of
// its latency per 64 inputs), and a row streamed at 19 GB/s from L3 on one Zen 4 core, against 39 with four
// (1024 x 4096; 55 for 8 rows a step, whose 8 chains are independent). Inputs [0, k64) only.
inline float row_one_token(const Packed& p, KeptIndex& ix, const uint16_t* x, int64_t n) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  const uint16_t* values = static_cast<const uint16_t*>(p.values) + n * (K / 2);
  const uint8_t* meta = p.meta + n * (K / 8);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const auto step = [&](int64_t k0, __m512& a) __attribute__((always_inline)) {
    prefetch_kept_bf16<1>(p, values, meta, k0);
    const __m512i xa = _mm512_loadu_si512(x + k0), xb = _mm512_loadu_si512(x + k0 + 32);
    a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_loadu_si512(values + k0 / 2),
                         (__m512bh)_mm512_permutex2var_epi16(xa, ix(meta + k0 / 8), xb));
  };
  int64_t k0 = 0;
  for (; k0 + 256 <= k64; k0 += 256) {
    asm("" : "+v"(ix.ctrl), "+v"(ix.base), "+v"(ix.three));  // (as in block)
    step(k0, acc[0]);
    step(k0 + 64, acc[1]);
    step(k0 + 128, acc[2]);
    step(k0 + 192, acc[3]);
  }
  for (int i = 0; k0 < k64; k0 += 64, ++i) step(k0, acc[i]);
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

// every token of rows n .. n + R - 1: tiles of up to kTokens, then the inputs past k64 (fewer than 64) by the
// scalar decoder, and the bias
template <int R>
void rows_block(const Packed& p, KeptIndex& ix, const uint16_t* x, int64_t m, float* out, const float* bias,
                int64_t n) {
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  float sums[R * kTokens];
  for (int64_t t0 = 0; t0 < m; t0 += kTokens) {
    const int64_t mt = std::min<int64_t>(kTokens, m - t0);
    const bool ahead = t0 == 0;
    if constexpr (R > kRows) {  // one token only (rows_semi24_bf16_dot): more tokens would spill
      block<1, R>(p, ix, x, t0, n, ahead, sums);
    } else {
      switch (mt) {
        case 1: block<1, R>(p, ix, x, t0, n, ahead, sums); break;
        case 2: block<2, R>(p, ix, x, t0, n, ahead, sums); break;
        case 3: block<3, R>(p, ix, x, t0, n, ahead, sums); break;
        default: block<4, R>(p, ix, x, t0, n, ahead, sums); break;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t t = 0; t < mt; ++t) {
        float s = sums[r * mt + t];
        for (int64_t k = k64; k < K; ++k) s += weight_at(p, n + r, k) * bf16_to_float(x[(t0 + t) * K + k]);
        out[(t0 + t) * p.n + n + r] = s + (bias ? bias[n + r] : 0.0f);
      }
  }
}

// ---------------------------------------------------------------- int4 + 2:4 exact, as bf16 dot products
//
// The fp32 kernel (int4_semi24_tile, gemm_avx512.cpp) streamed 23% of the read on one Zen 4 core: per 32 inputs a
// gather index (broadcast, variable shift, AND, add), a nibble decode, a lookup, a gather of the activations per
// token and an FMA, ~11 instructions for 12 bytes. Here 64 inputs a step, as the 2:4 bf16 kernel above: their 32
// kept codes (16 bytes) become 32 bf16 words of code - 8 (exact in bf16; KeptDecode, in its own order), KeptIndex
// turns the metadata qword into the 32 gather indices in the same order, and per token and bf16 part of the
// activations (each fp32 activation as up to 3 exact bf16 parts, as in gemm_nibble_bf16.cpp) one vpermt2w gathers
// and one vdpbf16ps adds two products into each fp32 lane: the products are exact, summed in fp32. A lane's two
// products lie in one half of 32 inputs (kUpperHalfLanes), so a group of 32 inputs is half the lanes: the scale
// vector may hold two halves. Zero points: the table holds code - 8 and the lanes also sum the kept activations
// (a dot with ones): s (sum (c - 8) x - (z - 8) sum x) per lane.
//
// Cost on Zen 4, one token, in L2 (bench/kernels/cpu/bf16_parts_cycles.cpp): 2.84 cycles per 32 inputs of a row
// with bf16 activations (1 part), 4.6 with fp32 ones (3 parts; each vpermt2w + vdpbf16ps pair ~1.8 cycles: they
// share pipes). The 3-part kernel beats the fp32 kernel (4096 x 14336 from DRAM: 2.5 against 3.6 ms), so it serves
// fp32 activations too. What a row and chunk spend besides the pairs (~9 vector instructions: two broadcast loads,
// the decode's shift and lookup, the index's multishift and ternlog, the scale's broadcast load and FMA) is not one
// instruction's cost: removing the index, the decode or the FMA alone saved 0-9% each (ad hoc variants).
constexpr int64_t kKeptChunk = 64;

// Per 64-input chunk: the group index of its two halves of 32 inputs
struct HalfGroups {
  std::vector<int32_t> lo, hi;
  HalfGroups(const Packed& p, int64_t C) : lo(C), hi(C) {
    const int64_t g = p.group >= p.k ? p.k : p.group, G = p.groups();
    for (int64_t c = 0; c < C; ++c) {
      lo[c] = static_cast<int32_t>(std::min<int64_t>(G - 1, c * kKeptChunk / g));
      hi[c] = static_cast<int32_t>(std::min<int64_t>(G - 1, (c * kKeptChunk + 32) / g));
    }
  }
};

// Decoded order: the 16 code bytes of a chunk are broadcast to the four 128-bit lanes (a load), so word i of lane
// q holds bytes 2i, 2i + 1, i.e. kept values 4i .. 4i + 3 in its four nibbles; lane q shifts right by 4q (vpsrlvw)
// and vpermw looks its low nibble up (bits 0-4; the table repeats its 16 values, so the next nibble's low bit in
// bit 4 is harmless). Word j = 8q + i is then kept value 4i + q: two instructions for 32 codes (vpermb + vpsrlvw
// + vpermw before). KeptIndex gathers in the same order.
inline int kept_order(int j) { return 4 * (j % 8) + j / 8; }

// Lane l of vdpbf16ps holds words 2l, 2l + 1: kept values 4i + q, 4i + 4 + q with i = 2l % 8, q = l / 4, both
// among kept 0-15 (inputs 0-31 of the chunk) where l % 4 < 2, else among kept 16-31: the lanes of the upper half
constexpr __mmask16 kUpperHalfLanes = 0xCCCC;

struct KeptDecode {
  __m512i shifts, table, ones;
  KeptDecode() {
    alignas(64) uint16_t sh[32], tb[32], one[32];
    for (int j = 0; j < 32; ++j) {
      sh[j] = static_cast<uint16_t>(4 * (j / 8));
      tb[j] = float_to_bf16_exact(static_cast<float>((j & 15) - 8));
      one[j] = float_to_bf16_exact(1.0f);
    }
    shifts = _mm512_load_si512(sh);
    table = _mm512_load_si512(tb);
    ones = _mm512_load_si512(one);
  }
  // the 32 kept codes of 64 inputs (16 bytes in each 128-bit lane of `codes`) as bf16 code - 8, in decoded order
  inline __m512i operator()(__m512i codes) const {
    return _mm512_permutexvar_epi16(_mm512_srlv_epi16(codes, shifts), table);
  }
};

// a chunk's 16 fp32 lanes of scales (or zero points - 8): one group across the chunk unless Halves
template <bool Halves>
inline __m512 per_half(float lo, float hi) {
  if constexpr (Halves)
    return _mm512_mask_blend_ps(kUpperHalfLanes, _mm512_set1_ps(lo), _mm512_set1_ps(hi));
  else
    return _mm512_set1_ps(lo);
}

// chunk c of rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 (S parts) into acc; Tail: the last chunk of 32
// inputs (K % 64 == 32), whose 8 code bytes and 4 position bytes only are read. Halves: the chunk's two halves of
// 32 inputs may lie in two groups (int4 g32, g96, ...).
template <int S, int MT, int R, bool Asym, bool Halves, bool Tail>
__attribute__((always_inline)) inline void kept_chunk(const Packed& p, const KeptIndex& ix, const KeptDecode& dec,
                                                      const HalfGroups& hg, const BlockScales& bs, const BfActs& a,
                                                      int64_t t0, int64_t n, int64_t c, __m512 (&acc)[R][MT]) {
  const int64_t K = p.k, C = a.chunks;
  constexpr int64_t kWords = BfActs::kParts * kKeptChunk;  // a chunk's activations of one token
  const uint16_t* xc = a.x.data() + (t0 * C + c) * kWords;
  // at one token the chunk's activations (2 S zmm) stay in registers for the R rows; with more tokens they do not
  // fit beside the 4 x 4 accumulators and are reloaded per row from L1
  __m512i xa[MT == 1 ? S : 1], xb[MT == 1 ? S : 1];
  if constexpr (MT == 1)
    for (int s = 0; s < S; ++s) {
      xa[s] = _mm512_loadu_si512(xc + s * kKeptChunk);
      xb[s] = _mm512_loadu_si512(xc + s * kKeptChunk + 32);
    }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* codes = p.codes + (n + r) * (K / 4) + c * 16;
    const uint8_t* meta = p.meta + (n + r) * (K / 8) + c * 8;
    if ((c & 3) == 0) {  // a line of codes per 4 chunks, half a line of positions: the block R rows on, into L2
      __builtin_prefetch(codes + R * (K / 4), 0, 2);
      __builtin_prefetch(meta + R * (K / 8), 0, 2);
    }
    __m512i cb, mw;
    if (Tail) {
      uint32_t m4;
      std::memcpy(&m4, meta, 4);
      mw = _mm512_set1_epi64(m4);
      cb = _mm512_broadcast_i32x4(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
    } else {
      uint64_t m8;
      std::memcpy(&m8, meta, 8);
      mw = _mm512_set1_epi64(static_cast<long long>(m8));
      cb = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    }
    const __m512i idx = ix.of(mw);
    const __m512i w = dec(cb);
    const float* sr = bs.scales_of(r);
    const uint16_t* xr = xc;
    if constexpr (MT > 1) asm("" : "+r"(xr));
#pragma GCC unroll 4
    for (int t = 0; t < MT; ++t) {
      const uint16_t* xt = xr + t * C * kWords;
      __m512 d = _mm512_setzero_ps(), e = _mm512_setzero_ps();
#pragma GCC unroll 3
      for (int s = 0; s < S; ++s) {
        __m512i xs;
        if constexpr (MT == 1)
          xs = _mm512_permutex2var_epi16(xa[s], idx, xb[s]);
        else
          xs = _mm512_permutex2var_epi16(_mm512_loadu_si512(xt + s * kKeptChunk), idx,
                                         _mm512_loadu_si512(xt + s * kKeptChunk + 32));
        d = _mm512_dpbf16_ps(d, (__m512bh)w, (__m512bh)xs);
        if constexpr (Asym) e = _mm512_dpbf16_ps(e, (__m512bh)dec.ones, (__m512bh)xs);
      }
      if constexpr (Asym) {
        const float* zr = bs.zeros_m8_of(r);
        const __m512 zm8 = per_half<Halves>(zr[hg.lo[c]], zr[hg.hi[c]]);
        d = _mm512_fnmadd_ps(zm8, e, d);
      }
      acc[r][t] = _mm512_fmadd_ps(per_half<Halves>(sr[hg.lo[c]], sr[hg.hi[c]]), d, acc[r][t]);
    }
  }
}

template <int S, int MT, int R, bool Asym, bool Halves>
inline void kept_block(const Packed& p, const KeptIndex& ix, const KeptDecode& dec, const HalfGroups& hg,
                       BlockScales& bs, const BfActs& a, int64_t t0, int64_t n, float* sums) {
  bs.load(p, n, R);
  __m512 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t full = p.k / kKeptChunk;
  for (int64_t c = 0; c < full; ++c) kept_chunk<S, MT, R, Asym, Halves, false>(p, ix, dec, hg, bs, a, t0, n, c, acc);
  if (full < a.chunks) kept_chunk<S, MT, R, Asym, Halves, true>(p, ix, dec, hg, bs, a, t0, n, full, acc);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) sums[r * MT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

// the kernel for parts_rows (decode_rows.h)
template <bool Asym, bool Halves>
struct KeptKernel {
  const Packed& p;
  const BfActs& a;
  const KeptIndex ix{kept_order};
  const KeptDecode dec;
  const HalfGroups hg;
  mutable BlockScales bs;  // per call, so per thread
  KeptKernel(const Packed& pk, const BfActs& ac) : p(pk), a(ac), hg(pk, ac.chunks) {}
  template <int S, int MT, int R>
  void block(int64_t t0, int64_t n, float* sums) const {
    kept_block<S, MT, R, Asym, Halves>(p, ix, dec, hg, bs, a, t0, n, sums);
  }
};

}  // namespace

void rows_semi24_bf16_dot(const Packed& p, const uint16_t* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  KeptIndex ix;
  int64_t n = n0;
  const int64_t K = p.k, k64 = K & ~int64_t(63);
  if (m == 1 && K * static_cast<int64_t>(sizeof(uint16_t)) <= kSharedActsBytes) {
    for (; n < n1; ++n) {
      float s = row_one_token(p, ix, x, n);
      for (int64_t k = k64; k < K; ++k) s += weight_at(p, n, k) * bf16_to_float(x[k]);
      out[n] = s + (bias ? bias[n] : 0.0f);
    }
    return;
  }
  if (m == 1)
    for (; n + kRowsOneToken <= n1; n += kRowsOneToken) rows_block<kRowsOneToken>(p, ix, x, m, out, bias, n);
  for (; n + kRows <= n1; n += kRows) rows_block<kRows>(p, ix, x, m, out, bias, n);
  for (; n < n1; ++n) rows_block<1>(p, ix, x, m, out, bias, n);
}

bool bf16_dot_compiled() { return true; }

bool int4_semi24_bf16_fits(const Packed& p) {
  return p.kind == Kind::kInt4Semi24 && p.k % 32 == 0 && (p.group % 32 == 0 || p.group >= p.k);
}

void rows_int4_semi24_bf16(const Packed& p, const BfActs& a, int64_t m, float* out, const float* bias, int64_t n0,
                           int64_t n1) {
  // both halves of every 64-input chunk in one group: g a multiple of 64, or one group a row
  const bool halves = p.group % kKeptChunk != 0 && p.group < p.k;
  if (p.zeros)
    return halves ? parts_rows(KeptKernel<true, true>(p, a), a.parts, m, out, bias, n0, n1)
                  : parts_rows(KeptKernel<true, false>(p, a), a.parts, m, out, bias, n0, n1);
  halves ? parts_rows(KeptKernel<false, true>(p, a), a.parts, m, out, bias, n0, n1)
         : parts_rows(KeptKernel<false, false>(p, a), a.parts, m, out, bias, n0, n1);
}

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: never called (bf16_dot_compiled() is false)

namespace sparsekit {
namespace cpu {

bool bf16_dot_compiled() { return false; }
bool int4_semi24_bf16_fits(const Packed&) { return false; }
void rows_int4_semi24_bf16(const Packed&, const BfActs&, int64_t, float*, const float*, int64_t, int64_t) {}
void rows_semi24_bf16_dot(const Packed& p, const uint16_t* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  for (int64_t t = 0; t < m; ++t)
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0.0f;
      for (int64_t k = 0; k < p.k; ++k) s += weight_at(p, n, k) * bf16_to_float(x[t * p.k + k]);
      out[t * p.n + n] = s + (bias ? bias[n] : 0.0f);
    }
}

}  // namespace cpu
}  // namespace sparsekit

#endif
