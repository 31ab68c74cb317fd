// The row and token loops of the AVX-512 decode kernels that take rows in blocks (gemm_avx512_bf16.cpp: 2:4 bf16 and
// int4 + 2:4; gemm_nibble_bf16.cpp and gemm_lookup_fp32.cpp: int4, MXFP4, int4 + 2:4), the block scales they share,
// how a 128-input chunk's lanes meet them, and the 2:4 gather indices (kept_index32, also gemm_avx512.cpp's).
// Included by those files inside their target pragma and their anonymous namespace (after <algorithm>,
// <type_traits>, <vector> and packed_cpu.h), so each gets its own copy compiled for its target.
//
// Rows a step: at one token 8 (the 2:4 bf16 kernel on bf16 activations: only where they outgrow L1, one row a step
// with 4 accumulators below; 8 accumulators and 8 row streams in flight: from DRAM on 4096 x 14336 at one
// thread, the 2:4 bf16 kernel took 4.6 ms with 1 row a step, 4.1 with 2, 3.2-3.4 with 4 and 2.8 with 8, alternating
// with the fp32 kernel on the same weights, ad hoc; the int4 kernel 5-10% faster with 8 than 4 in a prototype).
// With more tokens 4 rows by up to 4 tokens (16 accumulators): 8 rows would spill. The token tiles pass over a
// block of rows while it sits in L2, so the weights come from memory once.
constexpr int kRowsOneToken = 8;
constexpr int kRows = 4;
constexpr int kTokens = 4;  // tokens a tile

// The scales of a block of rows as fp32 (int4's fp16 ones; MXFP4's E8M0 ones, a scale per 32 inputs, as
// e8m0_to_float gives them) and int4's zero points - 8, converted once per block: per chunk and row a broadcast,
// plain or masked load (lane_values, below) then feeds the FMA. (In the int4 + 2:4 kernel at one bf16 part a scalar fp16 load, vcvtph2ps and
// a broadcast were 3 of the ~13 vector instructions of a chunk and row; MXFP4's per-chunk E8M0 decode was 7.)
struct BlockScales {
  std::vector<float> scales, zeros_m8;
  int64_t row = -1, rows = 0, per_row = 0;  // the block held; scales a row
  void load(const Packed& p, int64_t n, int R) {
    if (n == row && R == rows) return;  // the block's later token tiles
    row = n;
    rows = R;
    const bool mx = p.kind == Kind::kMXFP4;
    per_row = mx ? p.k / 32 : p.groups();
    const int64_t count = R * per_row, at = n * per_row;  // the block's rows are consecutive: count in a row
    scales.resize(static_cast<size_t>(count));
    if (mx) {
      for (int64_t i = 0; i < count; ++i) scales[static_cast<size_t>(i)] = e8m0_to_float(p.e8m0[at + i]);
      return;
    }
    for (int64_t i = 0; i < count; i += 16) {
      const __mmask16 in = count - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (count - i)) - 1);
      _mm512_mask_storeu_ps(scales.data() + i, in, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(in, p.scales + at + i)));
    }
    if (!p.zeros) return;
    zeros_m8.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) zeros_m8[static_cast<size_t>(i)] = static_cast<float>(p.zeros[at + i]) - 8.0f;
  }
  const float* scales_of(int r) const { return scales.data() + r * per_row; }
  const float* zeros_m8_of(int r) const { return zeros_m8.data() + r * per_row; }
};

// How the scales meet the lanes: one group across the chunk (int4 groups of 128k inputs or the whole row), or a
// group per lane (lane l of chunk c holds inputs 128c + 8l .. + 7, so any group of 8k inputs: int4 g16 .. g96 ..,
// MXFP4's blocks of 32).
enum class Mode { kBroadcast, kPerLane, kMX };

// Per chunk: the index of its first group in a row and, for the per-lane modes, the groups it touches as a load
// mask and each lane's group among them (`lanes`, 16 a chunk: the same pattern in every chunk where g divides 128,
// e.g. l / 4 for g32, and shifting from chunk to chunk for g96 or g160; MXFP4 keeps its l / 4 in a register,
// `mx_lanes`). Lanes past K take the last group.
struct ChunkGroups {
  std::vector<int32_t> first;
  std::vector<uint16_t> mask;
  LineVector<int32_t> lanes;
  __m512i mx_lanes = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), 2);
  ChunkGroups(const Packed& p, int64_t C, Mode mode)
      : first(C), mask(C), lanes(mode == Mode::kPerLane ? C * 16 : 0) {
    const int64_t K = p.k, g = mode == Mode::kMX ? 32 : p.group >= K ? K : p.group;
    const int64_t row_groups = mode == Mode::kMX ? K / 32 : p.groups();  // (BlockScales::per_row)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t k0 = c * kNibbleChunk, last = (std::min(K, k0 + kNibbleChunk) - 1) / g;
      first[c] = static_cast<int32_t>(k0 / g);
      const int64_t have = mode == Mode::kBroadcast ? 1 : std::min(last, row_groups - 1) - first[c] + 1;
      mask[c] = static_cast<uint16_t>((1u << have) - 1);
      if (mode == Mode::kPerLane)
        for (int l = 0; l < 16; ++l)
          lanes[static_cast<size_t>(c * 16 + l)] = static_cast<int32_t>(std::min(last, (k0 + 8 * l) / g) - first[c]);
    }
  }
};

// a chunk's 16 fp32 lanes of scales (or zero points - 8) from a row's fp32 ones (BlockScales, above): one
// broadcast load, or a load of the chunk's groups and a permute. MXFP4's whole chunks hold 4 blocks: a plain
// 16-byte load (with the masked load, its mask read per row and chunk, MXFP4 on fp32 activations, where nothing
// else changed, ran 1% slower at one token and 4% at 4 tokens from DRAM on Zen 4; on bf16 activations, with the
// one-chain change of gemm_nibble_bf16.cpp, the two together gained 3% and 19%). Tail (the short last chunk)
// masks the blocks past the row's end, which a plain load would take from the next row (a NaN scale there would
// reach this row) or, for a block's last row, from past the end of BlockScales::scales.
template <Mode M, bool Tail = true>
inline __m512 lane_values(const float* row, const ChunkGroups& cg, int64_t c) {
  const float* at = row + cg.first[c];
  if constexpr (M == Mode::kBroadcast)
    return _mm512_set1_ps(*at);
  else if constexpr (M == Mode::kMX && !Tail)
    return _mm512_permutexvar_ps(cg.mx_lanes, _mm512_castps128_ps512(_mm_loadu_ps(at)));
  else if constexpr (M == Mode::kMX)
    return _mm512_permutexvar_ps(cg.mx_lanes, _mm512_maskz_loadu_ps(cg.mask[c], at));
  else
    return _mm512_permutexvar_ps(_mm512_load_si512(cg.lanes.data() + c * 16),
                                 _mm512_maskz_loadu_ps(cg.mask[c], at));
}

// A block of R rows by MT tokens over a nibble row's 128-input chunks: zero the accumulators, run
// `chunk(tail, c, bytes, acc)` on each whole chunk (tail: std::false_type, 64 code bytes) and on the short last one
// where K % 128 != 0 (std::true_type, its code bytes), and reduce into sums[r * MT + t]. The lambda must be
// always_inline as well: outlined, it took the accumulators by memory (int4 lookup tiles +10% at 4 tokens).
template <int MT, int R, class Chunk>
__attribute__((always_inline)) inline void over_chunks(const Packed& p, int64_t chunks, float* sums, Chunk&& chunk) {
  __m512 acc[R][MT];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) acc[r][t] = _mm512_setzero_ps();
  const int64_t half = p.k / 2, full = half / 64;
  for (int64_t c = 0; c < full; ++c) chunk(std::false_type{}, c, int64_t(64), acc);
  if (full < chunks) chunk(std::true_type{}, full, half % 64, acc);
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < MT; ++t) sums[r * MT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

// The 16 kept inputs of 32 (k0 .. k0 + 31) of a 2:4 row as indices into those 32: the 4 metadata bytes hold
// group g's positions p0, p1 as consecutive 2-bit fields, so kept value j = 2g + i sits at bits 2j, 2j + 1 and
// one variable shift, an AND and an add of the group bases give the indices (for vpermt2ps over the 32 inputs).
inline __m512i kept_index32(const uint8_t* meta_row, int64_t k0) {
  uint32_t w;
  std::memcpy(&w, meta_row + k0 / 8, 4);
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i pos = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(w)), shifts),
                                       _mm512_set1_epi32(3));
  return _mm512_add_epi32(base, pos);
}

// The loops for a kernel K: K has `p` (the Packed weight) and
// `template <int S, int MT, int R> void block(int64_t t0, int64_t n, float* sums) const`, rows n .. n + R - 1 times
// tokens t0 .. t0 + MT - 1 on S bf16 parts of the activations (the fp32 lookup kernel: one fp32 part, S = 1) into
// sums[r * MT + t].

// every token of rows n .. n + R - 1, and the bias
template <int S, int R, class K>
void parts_rows_block(const K& k, int64_t m, float* out, const float* bias, int64_t n) {
  float sums[R * kTokens];
  for (int64_t t0 = 0; t0 < m; t0 += kTokens) {
    const int64_t mt = std::min<int64_t>(kTokens, m - t0);
    if constexpr (R > kRows) {  // one token only (more would spill)
      k.template block<S, 1, R>(t0, n, sums);
    } else {
      switch (mt) {
        case 1: k.template block<S, 1, R>(t0, n, sums); break;
        case 2: k.template block<S, 2, R>(t0, n, sums); break;
        case 3: k.template block<S, 3, R>(t0, n, sums); break;
        default: k.template block<S, 4, R>(t0, n, sums); break;
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t t = 0; t < mt; ++t) out[(t0 + t) * k.p.n + n + r] = sums[r * mt + t] + (bias ? bias[n + r] : 0.0f);
  }
}

// rows n0 .. n1 in blocks of 8 (one token) or 4 rows, then single rows
template <int S, class K>
void parts_rows_s(const K& k, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  int64_t n = n0;
  if (m == 1)
    for (; n + kRowsOneToken <= n1; n += kRowsOneToken) parts_rows_block<S, kRowsOneToken>(k, m, out, bias, n);
  for (; n + kRows <= n1; n += kRows) parts_rows_block<S, kRows>(k, m, out, bias, n);
  for (; n < n1; ++n) parts_rows_block<S, 1>(k, m, out, bias, n);
}

// the same, compiled for the number of bf16 parts the call's activations need
template <class K>
void parts_rows(const K& k, int parts, int64_t m, float* out, const float* bias, int64_t n0, int64_t n1) {
  switch (parts) {
    case 1: return parts_rows_s<1>(k, m, out, bias, n0, n1);
    case 2: return parts_rows_s<2>(k, m, out, bias, n0, n1);
    default: return parts_rows_s<3>(k, m, out, bias, n0, n1);
  }
}
