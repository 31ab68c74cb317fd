// AVX-512 BF16 path for the nibble layouts (int4, MXFP4) at decode: exact products through vdpbf16ps.
//
// Why: the fp32 kernel of the time (Split-based tiles in gemm_avx512.cpp, since replaced by gemm_lookup_fp32.cpp) spent
// per 32 weights a widening, a mask, a shift, two conversions or lookups and two FMAs: ~7 zmm instructions, and Zen 4
// issues ~1.5 of them a cycle (each kind 1 a cycle; bench/kernels/cpu/vector_throughput.cpp), so one core decoded
// int4 at ~40% of what it can read. (At 2+ tokens of fp32 activations the lookup tiles now beat this kernel: there
// a token's 3 dot products cost what 3 FMAs do, and the lookup is shared.) vdpbf16ps multiplies
// 32 bf16 pairs into 16 fp32 lanes, and every int4 code (code - 8) and E2M1 value is exact in bf16; the activations are
// not, so each fp32 activation is written as the sum of S bf16 parts (x = hi + mid + lo: RNE to 8 significant bits,
// then the residual, then its residual; 3 x 8 bits cover fp32's 24, exactly). Every product of a weight and a part is
// exact in fp32 (8 + 8 bits), and vdpbf16ps adds them in fp32, so the result is the fp32 sum of the exact products
// (code - 8) x or e2m1 x, scaled per group, as the fp32 kernel computes it, in another order (vcvtneps2bf16 flushes a
// part below 2^-126 to zero: only activations under ~2^-110 lose low bits). A bf16 model's activations need one part,
// and a call whose activations need fewer than 3 runs with fewer (S is chosen per call by the data). Calls with an
// activation of magnitude >= 2^127, inf or NaN take the fp32 kernel.
//
// Byte order as stored (no conversion at load): code byte b holds inputs 2b (low nibble), 2b + 1 (high), so the
// 16-bit word i of a 64-byte chunk (128 inputs) holds inputs 4i .. 4i + 3 in its four nibbles. Phase j = 0..3
// takes nibble j of each of the 32 words: a shift (vpsrlw 4j) brings it to bits 0-3 and vpermw looks it up in a
// 32-entry bf16 table (vpermw reads index bits 0-4; the table repeats its 16 values, so the neighbouring
// nibble's low bit in bit 4 is harmless). The activations are rearranged once per call to match: phase j,
// word i <- input 128c + 4i + j. Lane l of vdpbf16ps sums words 2l, 2l + 1, i.e. inputs in [128c + 8l,
// 128c + 8l + 8): a lane never mixes two groups of 8k inputs, so group scales (int4 g16 .. g96 .., MXFP4's
// block of 32) are per-lane vectors (ChunkGroups, decode_rows.h) and groups of 128k a broadcast.
// Per 128 weights of a row: 1 load, 3 shifts, 4 vpermw, 4 S vdpbf16ps, 1-2 FMAs (scale); rows R at a time share
// each activation load from L1 (a chunk's activations, 4 S x 64 bytes, stay in L1 while R rows pass over it).
#include <algorithm>
#include <cmath>
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

#include "decode_rows.h"

constexpr int64_t kChunk = kNibbleChunk;

// 16 fp32 lanes -> their bf16 bits (RNE, vcvtneps2bf16) and those bits widened back to fp32
inline __m256i to_bf16(__m512 v, __m512* back) {
  const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
  *back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return h;
}

// |x| >= 2^127 (or inf / NaN): the rounding to bf16 could overflow (inf - inf would make the products NaN)
inline bool finite_enough(__m512 v) {
  return !_mm512_cmpge_epi32_mask(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF)),
                                  _mm512_set1_epi32(0x7F000000));
}

// 16 activations as their 3 bf16 parts at dst, dst + stride, dst + 2 stride; `used` collects the mid and lo bits
inline void split3(__m512 v, uint16_t* dst, int64_t stride, __m512i& used) {
  __m512 back;
  const __m256i hi = to_bf16(v, &back);
  const __m512 r1 = _mm512_sub_ps(v, back);
  const __m256i mid = to_bf16(r1, &back);
  const __m512 r2 = _mm512_sub_ps(r1, back);
  const __m256i lo = to_bf16(r2, &back);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), hi);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + stride), mid);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 2 * stride), lo);
  used = _mm512_or_si512(used, _mm512_inserti64x4(_mm512_castsi256_si512(mid), lo, 1));
}

// the parts a call needs: 3 where some lo part is not +-0 (bits other than the sign), else 2 where some mid is
inline int parts_used(__m512i used) {
  alignas(64) uint16_t u[32];
  _mm512_store_si512(u, used);
  bool mid = false, lo = false;
  for (int i = 0; i < 32; ++i) (i < 16 ? mid : lo) |= (u[i] & 0x7FFFu) != 0;
  return lo ? 3 : mid ? 2 : 1;
}

// chunk c of rows n .. n + R - 1 times tokens t0 .. t0 + MT - 1 into acc (S parts); Tail: the short last chunk,
// whose `tail` code bytes only are read (the activations past K are zero, so the codes read as 0 add 0)
template <int S, int MT, int R, Mode M, bool Asym, bool Tail>
__attribute__((always_inline)) inline void chunk(const Packed& p, const ChunkGroups& cg, const BlockScales& bs,
                                                 __m512i table, const BfActs& a, int64_t t0, int64_t n, int64_t c,
                                                 int64_t tail, __m512 (&acc)[R][MT]) {
  const int64_t half = p.k / 2, C = a.chunks;
  constexpr int64_t kChunkWords = 4 * BfActs::kParts * 32;  // a chunk's activations of one token
  const uint16_t* xc = a.x.data() + (t0 * C + c) * kChunkWords;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const uint8_t* codes = p.codes + (n + r) * half + c * 64;
    // the same chunk of the block R rows on, which these R streams read next (bytes ahead would run into the rows
    // the other streams are reading), into L2 whatever the CPU: a block of R rows outgrows L1 (and a branch on the
    // plan's level per row measured 20% slower here, in L2 on Zen 4)
    __builtin_prefetch(codes + R * half, 0, 2);
    // (a masked load costs ~5% in L2 on Zen 4: full chunks load plainly)
    const __m512i w = Tail ? _mm512_maskz_loadu_epi8((__mmask64(1) << tail) - 1, codes) : _mm512_loadu_si512(codes);
    const __m512i w0 = _mm512_permutexvar_epi16(w, table);
    const __m512i w1 = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 4), table);
    const __m512i w2 = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), table);
    const __m512i w3 = _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 12), table);
    const __m512 sv = lane_values<M, Tail>(bs.scales_of(r), cg, c);
    // every row reloads the chunk's activations from L1: GCC would otherwise keep the 4 S MT vectors of the
    // first row in registers for the others, and spill them
    const uint16_t* xr = xc;
    asm("" : "+r"(xr));
#pragma GCC unroll 4
    for (int t = 0; t < MT; ++t) {
      const uint16_t* xt = xr + t * C * kChunkWords;
      // with 2-3 parts two chains (even and odd phases), so that vdpbf16ps's latency overlaps (one chain of 12
      // took 3.9 cycles per 32 inputs of a row against 3.55, in L2 on Zen 4: bench/kernels/cpu/bf16_parts_cycles.cpp);
      // one part, one chain of 4: the add of the two is then an instruction in ~14 a row and chunk (int4 on bf16
      // activations 2.03 -> 1.88 cycles per 32 inputs there)
      constexpr bool kTwo = S > 1;
      __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
#pragma GCC unroll 3
      for (int s = 0; s < S; ++s) {
        __m512& e = kTwo ? d1 : d0;
        d0 = _mm512_dpbf16_ps(d0, (__m512bh)w0, (__m512bh)_mm512_loadu_si512(xt + (0 * BfActs::kParts + s) * 32));
        e = _mm512_dpbf16_ps(e, (__m512bh)w1, (__m512bh)_mm512_loadu_si512(xt + (1 * BfActs::kParts + s) * 32));
        d0 = _mm512_dpbf16_ps(d0, (__m512bh)w2, (__m512bh)_mm512_loadu_si512(xt + (2 * BfActs::kParts + s) * 32));
        e = _mm512_dpbf16_ps(e, (__m512bh)w3, (__m512bh)_mm512_loadu_si512(xt + (3 * BfActs::kParts + s) * 32));
      }
      __m512 d = kTwo ? _mm512_add_ps(d0, d1) : d0;
      // minus (zero - 8) x the lane's sum of x
      if constexpr (Asym)
        d = _mm512_fnmadd_ps(lane_values<M, Tail>(bs.zeros_m8_of(r), cg, c),
                             _mm512_loadu_ps(a.lane_sums.data() + ((t0 + t) * C + c) * 16), d);
      acc[r][t] = _mm512_fmadd_ps(sv, d, acc[r][t]);
    }
  }
}

// sums[r * MT + t] = row n + r times token t0 + t (S parts, R rows, MT tokens)
template <int S, int MT, int R, Mode M, bool Asym>
inline void nibble_block(const Packed& p, const ChunkGroups& cg, BlockScales& bs, __m512i table, const BfActs& a,
                         int64_t t0, int64_t n, float* sums) {
  bs.load(p, n, R);
  over_chunks<MT, R>(p, a.chunks, sums,
                     [&](auto tail, int64_t c, int64_t bytes, __m512 (&acc)[R][MT]) __attribute__((always_inline)) {
                       chunk<S, MT, R, M, Asym, decltype(tail)::value>(p, cg, bs, table, a, t0, n, c, bytes, acc);
                     });
}

// the kernel of one scale arrangement, for parts_rows (decode_rows.h)
template <Mode M, bool Asym>
struct NibbleKernel {
  const Packed& p;
  const BfActs& a;
  const ChunkGroups cg;
  mutable BlockScales bs;  // per call, so per thread
  __m512i table;  // code - 8 (int4) or the E2M1 value as bf16, repeated: vpermw reads 5 index bits
  NibbleKernel(const Packed& pk, const BfActs& ac) : p(pk), a(ac), cg(pk, ac.chunks, M) {
    alignas(64) uint16_t tb[32];
    for (int i = 0; i < 32; ++i)
      tb[i] = float_to_bf16_exact(M == Mode::kMX ? e2m1_to_float(static_cast<uint32_t>(i & 15))
                                                 : static_cast<float>((i & 15) - 8));
    table = _mm512_load_si512(tb);
  }
  template <int S, int MT, int R>
  void block(int64_t t0, int64_t n, float* sums) const {
    nibble_block<S, MT, R, M, Asym>(p, cg, bs, table, a, t0, n, sums);
  }
};

}  // namespace

bool prepare_nibble_bf16(const Packed& p, const float* x, int64_t m, BfActs& a) {
  const int64_t K = p.k, C = (K + kChunk - 1) / kChunk;
  a.chunks = C;
  a.x.assign(static_cast<size_t>(m * C * 4 * BfActs::kParts * 32), 0);
  const bool sums = p.kind == Kind::kInt4 && p.zeros;
  a.lane_sums.assign(sums ? static_cast<size_t>(m * C * 16) : 0, 0.0f);
  __m512i used = _mm512_setzero_si512();  // the bits of every mid and lo part: which parts are needed
  alignas(64) int32_t step[16];
  for (int i = 0; i < 16; ++i) step[i] = 4 * i;
  const __m512i idx0 = _mm512_load_si512(step);
  for (int64_t t = 0; t < m; ++t) {
    const float* xt = x + t * K;
    for (int64_t c = 0; c < C; ++c) {
      for (int j = 0; j < 4; ++j) {
        uint16_t* dst = a.x.data() + ((t * C + c) * 4 + j) * BfActs::kParts * 32;
        for (int h = 0; h < 2; ++h) {  // words 16h .. 16h + 15 of phase j: inputs 128c + 64h + 4i + j
          const int64_t k0 = c * kChunk + 64 * h + j;
          const int left = static_cast<int>(std::max<int64_t>(0, K - k0));  // inputs of this phase still in the row
          const __mmask16 in = _mm512_cmplt_epi32_mask(idx0, _mm512_set1_epi32(left));
          const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx0, xt + std::min(k0, K - 1), 4);
          if (!finite_enough(v)) return false;
          split3(v, dst + 16 * h, 32, used);
        }
      }
      if (sums)  // lane l of a chunk covers inputs 128c + 8l .. + 7, summed in input order
        for (int l = 0; l < 16; ++l) {
          float s = 0.0f;
          for (int64_t k = c * kChunk + 8 * l; k < std::min(K, c * kChunk + 8 * l + 8); ++k) s += xt[k];
          a.lane_sums[static_cast<size_t>((t * C + c) * 16 + l)] = s;
        }
    }
  }
  a.parts = parts_used(used);
  return true;
}

bool prepare_kept_bf16(const Packed& p, const float* x, int64_t m, BfActs& a) {
  constexpr int64_t kStep = 64;  // inputs a step of the int4 + 2:4 kernel (gemm_avx512_bf16.cpp)
  const int64_t K = p.k, C = (K + kStep - 1) / kStep;
  a.chunks = C;
  a.x.assign(static_cast<size_t>(m * C * BfActs::kParts * kStep), 0);
  a.lane_sums.clear();
  __m512i used = _mm512_setzero_si512();
  for (int64_t t = 0; t < m; ++t)
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
      const __mmask16 in = K - k0 >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (K - k0)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(in, x + t * K + k0);
      if (!finite_enough(v)) return false;
      split3(v, a.x.data() + (t * C + k0 / kStep) * BfActs::kParts * kStep + k0 % kStep, kStep, used);
    }
  a.parts = parts_used(used);
  return true;
}

void rows_nibble_bf16(const Packed& p, const BfActs& a, int64_t m, float* out, const float* bias, int64_t n0,
                      int64_t n1) {
  if (p.kind == Kind::kMXFP4) return parts_rows(NibbleKernel<Mode::kMX, false>(p, a), a.parts, m, out, bias, n0, n1);
  const bool lanes = !(p.group >= p.k || p.group % kChunk == 0);  // else one group spans each chunk
  if (p.zeros)
    return lanes ? parts_rows(NibbleKernel<Mode::kPerLane, true>(p, a), a.parts, m, out, bias, n0, n1)
                 : parts_rows(NibbleKernel<Mode::kBroadcast, true>(p, a), a.parts, m, out, bias, n0, n1);
  return lanes ? parts_rows(NibbleKernel<Mode::kPerLane, false>(p, a), a.parts, m, out, bias, n0, n1)
               : parts_rows(NibbleKernel<Mode::kBroadcast, false>(p, a), a.parts, m, out, bias, n0, n1);
}

}  // namespace cpu
}  // namespace sparsekit

#pragma GCC pop_options

#else  // another compiler or architecture: never called (bf16_dot_compiled() is false)

namespace sparsekit {
namespace cpu {

bool prepare_nibble_bf16(const Packed&, const float*, int64_t, BfActs&) { return false; }
bool prepare_kept_bf16(const Packed&, const float*, int64_t, BfActs&) { return false; }
void rows_nibble_bf16(const Packed&, const BfActs&, int64_t, float*, const float*, int64_t, int64_t) {}

}  // namespace cpu
}  // namespace sparsekit

#endif
