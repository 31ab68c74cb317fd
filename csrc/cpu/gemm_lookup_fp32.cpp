// AVX-512 path for int4, MXFP4 and int4 + 2:4 with fp32 activations at 2-16 tokens: each weight looked up as the
// fp32 value the reference decodes, then FMAs (int4 + 2:4: on the gathered kept inputs, below), 4 rows by up to 4
// tokens a tile.
//
// Why: an fp32 activation costs the bf16-parts kernel (gemm_nibble_bf16.cpp) three vdpbf16ps per 32 weights and
// token, and vdpbf16ps shares Zen 4's two FMA pipes with vfmadd231ps (a pair of them issues every 2 cycles,
// bench/kernels/cpu/vector_throughput.cpp): 96 multiplier slots a token for what 32 fp32 FMA lanes do. With several
// tokens the lookup is shared and the FMAs are what is left, 2 per 32 weights and token: 4096 x 14336 at one thread
// (C++ prototype, DRAM) 5.3 ms against 8.2 at 4 tokens, 19 against 34 at 16, 3.5 against 3.9 at 2; at one token the
// lookup is not shared and the parts kernel stays faster (2.0 against 2.6 ms), so the binding sends one-token calls
// there. The Split-based fp32 tiles this replaces took 3.2 / 5.3 / 9.8 / 40 ms at 1 / 2 / 4 / 16 tokens (they
// widened codes with vpmovzxbd and converted them, ~7 instructions per 32 weights, and re-decoded a row per tile
// of 4 tokens without sharing activations between rows).
//
// Byte order as stored: dword l of a chunk's 64 code bytes holds inputs 128c + 8l .. 8l + 7, one per nibble. vpermps
// reads only bits 0-3 of each index lane, so phase j needs one shift (vpsrld 4j) and one vpermps on a 16-entry
// table to give the 16 weights of inputs 128c + 8l + j; the activations are rearranged once per call to match.
// The table holds the decoded values: (code - zero) x scale for a row's chunk where one group spans it (int4 groups
// of 128k or the whole row: 2 instructions a row and chunk), else code - 8 or the E2M1 value, then minus the lane's
// zero - 8 and times the lane's scale (other groups of 16k inputs, MXFP4's 32). Either way a weight is the
// reference's fp32 value bit for bit ((c - z) and e2m1 are exact, one rounding by the scale) and the sum is fp32
// FMA accumulation, as the fp32 reference computes it in another order.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "packed_cpu.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#include <immintrin.h>

namespace sparsekit {
namespace cpu {
namespace {

#include "decode_rows.h"

constexpr int64_t kChunk = kNibbleChunk;

// chunk c of rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 into acc; Tail: the short last chunk, whose `tail`
// code bytes only are read (the activations past K are zero, so the codes read as 0 add 0)
template <int MT, int R, Mode M, bool Asym, bool Tail>
__attribute__((always_inline)) inline void chunk(const Packed& p, const ChunkGroups& cg, const BlockScales& bs,
                                                 __m512 base, const F32Acts& a, int64_t t0, int64_t n, int64_t c,
                                                 int64_t tail, __m512 (&acc)[R][MT]) {
  constexpr bool kTable = M == Mode::kBroadcast;  // the row's decoded values as the table
  const int64_t half = p.k / 2, C = a.chunks;
  __m512i codes[R];
  __m512 scale[R], zero[R];  // kTable: the table; else the lanes' scales and zero points - 8
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* at = p.codes + (n + r) * half + c * 64;
    // the same chunk of the block R rows on, which these R streams read next, into L2 (as gemm_nibble_bf16.cpp)
    __builtin_prefetch(at + R * half, 0, 2);
    codes[r] = Tail ? _mm512_maskz_loadu_epi8((__mmask64(1) << tail) - 1, at) : _mm512_loadu_si512(at);
    if constexpr (kTable) {
      const __m512 q = Asym ? _mm512_sub_ps(base, lane_values<M, Tail>(bs.zeros_m8_of(r), cg, c)) : base;
      scale[r] = _mm512_mul_ps(q, lane_values<M, Tail>(bs.scales_of(r), cg, c));
    } else {
      scale[r] = lane_values<M, Tail>(bs.scales_of(r), cg, c);
      if constexpr (Asym) zero[r] = lane_values<M, Tail>(bs.zeros_m8_of(r), cg, c);
    }
  }
  const float* xc = a.x.data() + (t0 * C + c) * kChunk;
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    __m512 xv[MT];
#pragma GCC unroll 4
    for (int t = 0; t < MT; ++t) xv[t] = _mm512_load_ps(xc + t * C * kChunk + j * 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512i idx = j ? _mm512_srli_epi32(codes[r], 4 * j) : codes[r];
      __m512 w;
      if constexpr (kTable) {
        w = _mm512_permutexvar_ps(idx, scale[r]);
      } else {
        w = _mm512_permutexvar_ps(idx, base);
        if constexpr (Asym) w = _mm512_sub_ps(w, zero[r]);
        w = _mm512_mul_ps(w, scale[r]);
      }
#pragma GCC unroll 4
      for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_fmadd_ps(w, xv[t], acc[r][t]);
    }
  }
}

// sums[r * MT + t] = row n + r times token t0 + t
template <int MT, int R, Mode M, bool Asym>
inline void lookup_block(const Packed& p, const ChunkGroups& cg, BlockScales& bs, __m512 base, const F32Acts& a,
                         int64_t t0, int64_t n, float* sums) {
  bs.load(p, n, R);
  over_chunks<MT, R>(p, a.chunks, sums,
                     [&](auto tail, int64_t c, int64_t bytes, __m512 (&acc)[R][MT]) __attribute__((always_inline)) {
                       chunk<MT, R, M, Asym, decltype(tail)::value>(p, cg, bs, base, a, t0, n, c, bytes, acc);
                     });
}

// the kernel of one scale arrangement, for parts_rows_s<1> (decode_rows.h; the activations are one fp32 part)
template <Mode M, bool Asym>
struct LookupKernel {
  const Packed& p;
  const F32Acts& a;
  const ChunkGroups cg;
  mutable BlockScales bs;  // per call, so per thread
  __m512 base;             // code - 8 (int4) or the E2M1 value of each code
  LookupKernel(const Packed& pk, const F32Acts& ac) : p(pk), a(ac), cg(pk, ac.chunks, M) {
    alignas(64) float t[16];
    for (int c = 0; c < 16; ++c)
      t[c] = M == Mode::kMX ? e2m1_to_float(static_cast<uint32_t>(c)) : static_cast<float>(c - 8);
    base = _mm512_load_ps(t);
  }
  template <int S, int MT, int R>
  void block(int64_t t0, int64_t n, float* sums) const {
    lookup_block<MT, R, M, Asym>(p, cg, bs, base, a, t0, n, sums);
  }
};

// ---------------------------------------------------------------- int4 + 2:4: looked-up kept weights, gathered inputs
//
// A half step of 32 inputs holds 16 kept weights: 8 code bytes (kept value 2g + i of group g in byte g, low nibble
// first) and 4 metadata bytes (group g's positions p0, p1 in bits 4g .. 4g + 3). Per row, shared by the tile's
// tokens: the bytes are doubled (unpack) and widened to dwords, lane j shifted right by 4 (j & 1), and vpermps
// looks the 16 values up in the row's table for the group; the kept inputs' indices 4g + p come from the
// metadata with a variable shift, a mask and an add (kept_index32). Per token: one vpermt2ps picks those 16 inputs
// out of the 32 (the activations as they are, no preparation) and one FMA: per 64 inputs and token 2 FMAs a row
// where int4 needs 4 (the pruned half is never multiplied), plus 2 gathers, which do not issue for free beside
// them (vpermt2w with a dot product: 1.9 cycles a pair, vector_throughput.cpp): measured within 10% of int4.
// Exactness as above: the reference's fp32 weights, fp32 FMA sums. Pruned weights are not multiplied: an inf or
// NaN activation where a row's weight is pruned never reaches that row (finite there; the reference's 0 x inf is
// NaN).

// half step h (inputs 32h .. 32h + 31) of rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 into acc
template <int MT, int R, bool Asym>
__attribute__((always_inline)) inline void kept_half(const Packed& p, const BlockScales& bs, __m512 base,
                                                     const float* x, int64_t t0, int64_t n, int64_t h,
                                                     __m512 (&acc)[R][MT]) {
  const int64_t K = p.k, code_row = K / 4, meta_row = K / 8, k0 = 32 * h;
  const int64_t gi = p.group >= K ? 0 : k0 / p.group;  // a half lies in one group (int4_semi24_f32_fits)
  const __m512i nibble = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
  __m512 w[R];
  __m512i idx[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const uint8_t* codes = p.codes + (n + r) * code_row + 8 * h;
    const uint8_t* meta = p.meta + (n + r) * meta_row;
    // a line of codes covers 8 half steps, one of metadata 16; the same place R rows on is what these R streams
    // read next (as in the nibble kernels), into L2
    if ((h & 7) == 0) __builtin_prefetch(codes + R * code_row, 0, 2);
    if ((h & 15) == 0) __builtin_prefetch(meta + k0 / 8 + R * meta_row, 0, 2);
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
    const __m512i q = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b)), nibble);
    const __m512 vals = Asym ? _mm512_sub_ps(base, _mm512_set1_ps(bs.zeros_m8_of(r)[gi])) : base;
    w[r] = _mm512_permutexvar_ps(q, _mm512_mul_ps(vals, _mm512_set1_ps(bs.scales_of(r)[gi])));
    idx[r] = kept_index32(meta, k0);
  }
#pragma GCC unroll 4
  for (int t = 0; t < MT; ++t) {
    const float* xk = x + (t0 + t) * K + k0;
    const __m512 xa = _mm512_loadu_ps(xk), xb = _mm512_loadu_ps(xk + 16);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(w[r], _mm512_permutex2var_ps(xa, idx[r], xb), acc[r][t]);
  }
}

// the kernel for parts_rows_s<1> (decode_rows.h; fp32 activations as they are)
template <bool Asym>
struct KeptLookupKernel {
  const Packed& p;
  const float* x;
  mutable BlockScales bs;  // per call, so per thread
  __m512 base;             // code - 8
  KeptLookupKernel(const Packed& pk, const float* xp) : p(pk), x(xp) {
    alignas(64) float t[16];
    for (int c = 0; c < 16; ++c) t[c] = static_cast<float>(c - 8);
    base = _mm512_load_ps(t);
  }
  template <int S, int MT, int R>
  void block(int64_t t0, int64_t n, float* sums) const {
    bs.load(p, n, R);
    __m512 acc[R][MT];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
    for (int64_t h = 0; h < p.k / 32; ++h) kept_half<MT, R, Asym>(p, bs, base, x, t0, n, h, acc);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < MT; ++t) sums[r * MT + t] = _mm512_reduce_add_ps(acc[r][t]);
  }
};

}  // namespace

void prepare_nibble_f32(const Packed& p, const float* x, int64_t m, F32Acts& a) {
  const int64_t K = p.k, C = (K + kChunk - 1) / kChunk;
  a.chunks = C;
  a.x.assign(static_cast<size_t>(m * C * kChunk), 0.0f);
  alignas(64) int32_t step[16];
  for (int i = 0; i < 16; ++i) step[i] = 8 * i;
  const __m512i idx0 = _mm512_load_si512(step);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t c = 0; c < C; ++c)
      for (int j = 0; j < 8; ++j) {  // phase j, lane l <- input 128c + 8l + j
        const int64_t k0 = c * kChunk + j;
        const int left = static_cast<int>(std::max<int64_t>(0, K - k0));
        const __mmask16 in = _mm512_cmplt_epi32_mask(idx0, _mm512_set1_epi32(left));
        const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx0, x + t * K + std::min(k0, K - 1), 4);
        _mm512_store_ps(a.x.data() + ((t * C + c) * 8 + j) * 16, v);
      }
}

void rows_nibble_f32(const Packed& p, const F32Acts& a, int64_t m, float* out, const float* bias, int64_t n0,
                     int64_t n1) {
  // (parts_rows_s<1>: one fp32 part; parts_rows would compile the same kernel for 2 and 3 bf16 parts too)
  if (p.kind == Kind::kMXFP4) return parts_rows_s<1>(LookupKernel<Mode::kMX, false>(p, a), m, out, bias, n0, n1);
  const bool lanes = !(p.group >= p.k || p.group % kChunk == 0);  // else one group spans each chunk
  if (p.zeros)
    return lanes ? parts_rows_s<1>(LookupKernel<Mode::kPerLane, true>(p, a), m, out, bias, n0, n1)
                 : parts_rows_s<1>(LookupKernel<Mode::kBroadcast, true>(p, a), m, out, bias, n0, n1);
  return lanes ? parts_rows_s<1>(LookupKernel<Mode::kPerLane, false>(p, a), m, out, bias, n0, n1)
               : parts_rows_s<1>(LookupKernel<Mode::kBroadcast, false>(p, a), m, out, bias, n0, n1);
}

bool int4_semi24_f32_fits(const Packed& p) {
  return p.kind == Kind::kInt4Semi24 && p.k % 32 == 0 && (p.group >= p.k || p.group % 32 == 0);
}

void rows_int4_semi24_f32(const Packed& p, const float* x, int64_t m, float* out, const float* bias, int64_t n0,
                          int64_t n1) {
  if (p.zeros) return parts_rows_s<1>(KeptLookupKernel<true>(p, x), m, out, bias, n0, n1);
  return parts_rows_s<1>(KeptLookupKernel<false>(p, x), m, out, bias, n0, n1);
}

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: never called (avx512_compiled() is false)

namespace sparsekit {
namespace cpu {

void prepare_nibble_f32(const Packed&, const float*, int64_t, F32Acts&) {}
void rows_nibble_f32(const Packed&, const F32Acts&, int64_t, float*, const float*, int64_t, int64_t) {}
bool int4_semi24_f32_fits(const Packed&) { return false; }
void rows_int4_semi24_f32(const Packed&, const float*, int64_t, float*, const float*, int64_t, int64_t) {}

}  // namespace cpu
}  // namespace sparsekit

#endif
