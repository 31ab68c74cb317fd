// Throughput of 256-bit (AVX2) vector instructions and of the AVX2 decode kernels' per-step mixes, each alone: the
// issue rate with latency out of the way (8 accumulator chains; the temporaries are shared by all chains, which
// register renaming makes independent). The counterpart of vector_throughput.cpp (AVX-512) for CPUs without
// AVX-512 (the Zen 3 of docs/cpu-kernels.md): a mix's cycles per step, at the clock, give the most packed bytes per second that
// kernel's instructions allow on one core with its data in L1 (memory operands read a 256-byte buffer), so a
// kernel whose mix cannot issue at 70% of the read bandwidth cannot stream at 70% from memory either.
// Cycles assume a fixed clock (argv[1], GHz; ~3.1 on the Zen 3 VM by a dependent-add loop). A shared VM's figures
// move by tens of % between runs (another tenant on the core): each line is the fastest of 5 timings.
//
//   g++ -O2 -mavx2 -mfma -o /tmp/vector_throughput_avx2 bench/kernels/cpu/vector_throughput_avx2.cpp
//   /tmp/vector_throughput_avx2 3.1            # [GHz] [iterations a timing, 40M]
#include <chrono>
#include <cstdio>
#include <cstdlib>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static double ghz = 3.1;
static long iters = 40000000L;  // loop iterations a timing (argv[2]: fewer for a quick check)
alignas(64) static float buf[64];  // zeros: the activations, codes and positions the mixes read

// accumulators ymm8-15; temporaries ymm0-3; constants ymm4-7 (zeros: the values do not change the timing)
#define ACC(i) "%%ymm" #i
#define R8(x) x(8) x(9) x(10) x(11) x(12) x(13) x(14) x(15)
#define R4(x) x(8, 9) x(10, 11) x(12, 13) x(14, 15)
// `per`: steps in one loop iteration; `bytes`: packed bytes a step streams (0: an instruction line)
#define BENCH(name, per, bytes, body)                                                                         \
  {                                                                                                           \
    double best = 1e30;                                                                                       \
    for (int rep = 0; rep < 5; ++rep) {                                                                       \
      const double t = now();                                                                                 \
      long n = iters;                                                                                        \
      __asm__ volatile(                                                                                       \
          "vpxor %%ymm4,%%ymm4,%%ymm4\n vpxor %%ymm5,%%ymm5,%%ymm5\n vpxor %%ymm6,%%ymm6,%%ymm6\n"              \
          "vpxor %%ymm7,%%ymm7,%%ymm7\n vpxor %%ymm8,%%ymm8,%%ymm8\n vpxor %%ymm9,%%ymm9,%%ymm9\n"              \
          "vpxor %%ymm10,%%ymm10,%%ymm10\n vpxor %%ymm11,%%ymm11,%%ymm11\n vpxor %%ymm12,%%ymm12,%%ymm12\n"     \
          "vpxor %%ymm13,%%ymm13,%%ymm13\n vpxor %%ymm14,%%ymm14,%%ymm14\n vpxor %%ymm15,%%ymm15,%%ymm15\n"     \
          "1:\n" body "dec %0\n jnz 1b\n"                                                                     \
          : "+r"(n)                                                                                           \
          : "r"(buf)                                                                                          \
          : "memory", "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9", "ymm10",   \
            "ymm11", "ymm12", "ymm13", "ymm14", "ymm15");                                                     \
      const double dt = now() - t;                                                                            \
      if (dt < best) best = dt;                                                                               \
    }                                                                                                         \
    const double cyc = best * ghz * 1e9 / iters / (per);                                                     \
    if ((bytes) > 0)                                                                                          \
      std::printf("%-40s %6.2f cycles a step: %5.1f GB/s of packed bytes\n", name, cyc, (bytes) * ghz / cyc); \
    else                                                                                                      \
      std::printf("%-40s %6.2f cycles each\n", name, cyc);                                                    \
  }

// single instructions, 8 a loop iteration (the accumulating ones on the 8 chains)
#define FMA(i) "vfmadd231ps %%ymm4,%%ymm5," ACC(i) "\n"
#define CVT(i) "vcvtdq2ps %%ymm6,%%ymm0\n"
#define ZXBD(i) "vpmovzxbd (%1),%%ymm0\n"
#define AND(i) "vpand %%ymm6,%%ymm7,%%ymm0\n"
#define SRLD(i) "vpsrld $4,%%ymm6,%%ymm0\n"
#define SRLVD(i) "vpsrlvd %%ymm6,%%ymm7,%%ymm0\n"
#define PERMILPS(i) "vpermilps %%ymm6,%%ymm7,%%ymm0\n"
#define BLENDPS(i) "vblendps $0xCC,%%ymm6,%%ymm7,%%ymm0\n"
#define PSHUFB(i) "vpshufb %%ymm6,%%ymm7,%%ymm0\n"
#define MADDUBS(i) "vpmaddubsw %%ymm6,%%ymm7,%%ymm0\n"
#define MADDWD(i) "vpmaddwd %%ymm6,%%ymm7,%%ymm0\n"
#define LOAD(i) "vmovups (%1),%%ymm0\n"
#define PERMPS(i) "vpermps %%ymm6,%%ymm7,%%ymm0\n"
#define PERMPS_MEM(i) "vpermps 96(%1),%%ymm7,%%ymm0\n"

// Kernel mixes, one step each (the loop bodies of csrc/cpu/gemm_avx2.cpp at one token, constants in ymm4-7):
// exact int4 (int4_tile): 8 code bytes = 16 weights: a zero-extending load, AND / shift for the low / high
// nibbles, two conversions, two FMAs on the even / odd activations (memory operands); two chains a step
#define INT4_EXACT(a, b)                                                                                       \
  "vpmovzxbd (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpsrld $4,%%ymm0,%%ymm0\n vcvtdq2ps %%ymm1,%%ymm1\n"  \
  "vcvtdq2ps %%ymm0,%%ymm0\n vfmadd231ps 32(%1),%%ymm1," ACC(a) "\n vfmadd231ps 64(%1),%%ymm0," ACC(b) "\n"
// MXFP4 exact at 2-4 tokens (mxfp4_tile): the same 16 weights through two 8-entry vpermps (the block's table row
// a memory operand) and the sign XOR of each, instead of the AND and the conversions
#define MXFP4_PERMUTE(a, b)                                                                                    \
  "vpmovzxbd (%1),%%ymm0\n vpsrld $4,%%ymm0,%%ymm1\n vpslld $28,%%ymm0,%%ymm2\n vpslld $28,%%ymm1,%%ymm3\n"   \
  "vpermps 96(%1),%%ymm0,%%ymm0\n vpermps 96(%1),%%ymm1,%%ymm1\n vxorps %%ymm2,%%ymm0,%%ymm0\n"              \
  "vxorps %%ymm3,%%ymm1,%%ymm1\n vfmadd231ps 32(%1),%%ymm0," ACC(a) "\n vfmadd231ps 64(%1),%%ymm1," ACC(b) "\n"
// MXFP4 exact at one token (mxfp4_one_token_rows): a 32-weight block, its 16 code bytes broadcast to both halves;
// the nibbles split (AND, shift, AND), one vpshufb each through the byte table (2 x E2M1 + 12), four in-lane
// vpshufb spreads to dwords, four conversions, the block's sum (a multiply and three FMAs on the activations),
// the scale broadcast and one FMA into the row's sum
#define MXFP4_BYTES(i)                                                                                         \
  "vbroadcasti128 (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpsrlw $4,%%ymm0,%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm0\n" \
  "vpshufb %%ymm1,%%ymm5,%%ymm1\n vpshufb %%ymm0,%%ymm5,%%ymm0\n vpshufb %%ymm4,%%ymm1,%%ymm2\n"              \
  "vpshufb %%ymm6,%%ymm1,%%ymm1\n vcvtdq2ps %%ymm2,%%ymm2\n vcvtdq2ps %%ymm1,%%ymm1\n vmulps 32(%1),%%ymm2,%%ymm3\n" \
  "vfmadd231ps 64(%1),%%ymm1,%%ymm3\n vpshufb %%ymm4,%%ymm0,%%ymm2\n vpshufb %%ymm6,%%ymm0,%%ymm0\n"          \
  "vcvtdq2ps %%ymm2,%%ymm2\n vcvtdq2ps %%ymm0,%%ymm0\n vfmadd231ps 96(%1),%%ymm2,%%ymm3\n"                     \
  "vfmadd231ps 128(%1),%%ymm0,%%ymm3\n vbroadcastss 160(%1),%%ymm2\n vfmadd231ps %%ymm2,%%ymm3," ACC(i) "\n"
// 2:4 with bf16 values gathered (semi24_gather_rows): 16 inputs, 8 kept values: the metadata broadcast and
// variable shift, two vpermilps of the reordered activations, a blend, the bf16 values zero-extended and
// shifted to fp32, one FMA
#define SEMI24_GATHER(i)                                                                                       \
  "vpbroadcastd (%1),%%ymm0\n vpsrlvd %%ymm6,%%ymm0,%%ymm0\n vpermilps 32(%1),%%ymm0,%%ymm1\n"                \
  "vpermilps 64(%1),%%ymm0,%%ymm2\n vblendps $0xCC,%%ymm2,%%ymm1,%%ymm1\n vpmovzxwd 96(%1),%%ymm3\n"          \
  "vpslld $16,%%ymm3,%%ymm3\n vfmadd231ps %%ymm3,%%ymm1," ACC(i) "\n"
// exact int4 + 2:4 gathered (int4_semi24_gather_rows): 16 inputs, 8 kept codes: the codes broadcast, shifted
// and masked, converted; the gather as above; one FMA (the zero point folded out per group)
#define INT4_SEMI24_GATHER(i)                                                                                  \
  "vpbroadcastd (%1),%%ymm0\n vpsrlvd %%ymm6,%%ymm0,%%ymm0\n vpermilps 32(%1),%%ymm0,%%ymm1\n"                \
  "vpermilps 64(%1),%%ymm0,%%ymm2\n vblendps $0xCC,%%ymm2,%%ymm1,%%ymm1\n vpbroadcastd 96(%1),%%ymm3\n"       \
  "vpsrlvd %%ymm5,%%ymm3,%%ymm3\n vpand %%ymm7,%%ymm3,%%ymm3\n vcvtdq2ps %%ymm3,%%ymm3\n"                     \
  "vfmadd231ps %%ymm3,%%ymm1," ACC(i) "\n"
// int4 a8 with groups of 32 or 64 (int4_a8_avx2_rows): 64 inputs = 32 code bytes: load, the nibbles split (AND, shift, AND), two
// vpmaddubsw on the even / odd activation bytes, the int16 add, vpmaddwd to int32, the conversion, the scales
// (two broadcasts and an insert for the chunk's two groups, a multiply by the lanes' block scales), one FMA
#define INT4_A8(i)                                                                                             \
  "vmovdqu (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpsrlw $4,%%ymm0,%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm0\n" \
  "vpmaddubsw 32(%1),%%ymm1,%%ymm1\n vpmaddubsw 64(%1),%%ymm0,%%ymm0\n vpaddw %%ymm1,%%ymm0,%%ymm0\n"        \
  "vpmaddwd %%ymm6,%%ymm0,%%ymm0\n vcvtdq2ps %%ymm0,%%ymm0\n vbroadcastss 128(%1),%%xmm2\n"                  \
  "vbroadcastss 132(%1),%%xmm3\n vinsertf128 $1,%%xmm3,%%ymm2,%%ymm2\n vmulps 96(%1),%%ymm2,%%ymm2\n"         \
  "vfmadd231ps %%ymm2,%%ymm0," ACC(i) "\n"
// int4 a8 with groups of 128k (kGroupScale): the same without the per-chunk scale work (the group scale applied
// to each group's sum, one FMA per 128 inputs, left out here)
#define INT4_A8_CORE(i)                                                                                        \
  "vmovdqu (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpsrlw $4,%%ymm0,%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm0\n" \
  "vpmaddubsw 32(%1),%%ymm1,%%ymm1\n vpmaddubsw 64(%1),%%ymm0,%%ymm0\n vpaddw %%ymm1,%%ymm0,%%ymm0\n"        \
  "vpmaddwd %%ymm6,%%ymm0,%%ymm0\n vcvtdq2ps %%ymm0,%%ymm0\n vfmadd231ps 96(%1),%%ymm0," ACC(i) "\n"
// int4 + 2:4 a8 at one token, gathered a row at a time (GatherA8, to 73e152c): 64 inputs = 16 code bytes + 8 metadata bytes: the codes
// broadcast, spread to the halves (vpshufb), shifted and masked; the positions broadcast, shifted per qword, masked,
// OR-ed with their groups' places; two vpshufb of the activations and a blend; two vpmaddubsw (codes, zero point),
// the int16 difference, vpmaddwd, the conversion and one FMA with the lanes' block scales
#define INT4_SEMI24_A8_GATHER(i)                                                                               \
  "vbroadcasti128 (%1),%%ymm0\n vpshufb %%ymm4,%%ymm0,%%ymm0\n vpsrlvd %%ymm5,%%ymm0,%%ymm0\n"               \
  "vpand %%ymm7,%%ymm0,%%ymm0\n vpbroadcastq 16(%1),%%ymm1\n vpsrlvq %%ymm5,%%ymm1,%%ymm1\n"                 \
  "vpand %%ymm7,%%ymm1,%%ymm1\n vpor %%ymm6,%%ymm1,%%ymm1\n vpshufb 32(%1),%%ymm1,%%ymm2\n"                 \
  "vmovdqu 64(%1),%%ymm3\n vpshufb %%ymm1,%%ymm3,%%ymm3\n vpblendd $0xAA,%%ymm3,%%ymm2,%%ymm2\n"              \
  "vpmaddubsw %%ymm2,%%ymm0,%%ymm0\n vpmaddubsw %%ymm2,%%ymm6,%%ymm3\n vpsubw %%ymm3,%%ymm0,%%ymm0\n"         \
  "vpmaddwd %%ymm6,%%ymm0,%%ymm0\n vcvtdq2ps %%ymm0,%%ymm0\n vfmadd231ps 96(%1),%%ymm0," ACC(i) "\n"

// int4 + 2:4 a8 in tiles of 8 rows (int4_semi24_a8_avx2_tiles) at one token: one block of 32 inputs of 8 rows = 4
// steps of 64 kept-or-pruned inputs (24 packed bytes each): the positions loaded once (AND with 0x33 and OR of the
// second group's bit; the same after a shift by 2), per step the codes (AND, or shift and AND, from one of two
// loads) less z, added bytewise for the bias, a broadcast qword of activations, one vpshufb (steps 2, 3: their
// indices shifted down by 4), vpmaddubsw and the int16 add; per block the 128 sum (c - z) term (vpmaddubsw against
// 128s), its subtraction, vpmaddwd to a row's int32 lane, the conversion, the block scale broadcast and one FMA
#define INT4_SEMI24_A8_TILES                                                                                   \
  "vmovdqu 64(%1),%%ymm12\n vpand %%ymm5,%%ymm12,%%ymm0\n vpor %%ymm6,%%ymm0,%%ymm0\n vpsrlw $2,%%ymm12,%%ymm1\n"   \
  "vpand %%ymm5,%%ymm1,%%ymm1\n vpor %%ymm6,%%ymm1,%%ymm1\n"                                                   \
  "vmovdqu (%1),%%ymm12\n vpand %%ymm4,%%ymm12,%%ymm2\n vpsubb 160(%1),%%ymm2,%%ymm2\n vmovdqa %%ymm2,%%ymm10\n"   \
  "vpbroadcastq 96(%1),%%ymm11\n vpshufb %%ymm0,%%ymm11,%%ymm11\n vpmaddubsw %%ymm2,%%ymm11,%%ymm3\n"          \
  "vpsrlw $4,%%ymm12,%%ymm12\n vpand %%ymm4,%%ymm12,%%ymm2\n vpsubb 160(%1),%%ymm2,%%ymm2\n"                   \
  "vpaddb %%ymm2,%%ymm10,%%ymm10\n vpbroadcastq 104(%1),%%ymm11\n vpshufb %%ymm1,%%ymm11,%%ymm11\n"             \
  "vpmaddubsw %%ymm2,%%ymm11,%%ymm11\n vpaddw %%ymm11,%%ymm3,%%ymm3\n"                                          \
  "vmovdqu 32(%1),%%ymm12\n vpand %%ymm4,%%ymm12,%%ymm2\n vpsubb 160(%1),%%ymm2,%%ymm2\n"                      \
  "vpaddb %%ymm2,%%ymm10,%%ymm10\n vpsrlw $4,%%ymm0,%%ymm0\n vpbroadcastq 112(%1),%%ymm11\n"                    \
  "vpshufb %%ymm0,%%ymm11,%%ymm11\n vpmaddubsw %%ymm2,%%ymm11,%%ymm11\n vpaddw %%ymm11,%%ymm3,%%ymm3\n"          \
  "vpsrlw $4,%%ymm12,%%ymm12\n vpand %%ymm4,%%ymm12,%%ymm2\n vpsubb 160(%1),%%ymm2,%%ymm2\n"                   \
  "vpaddb %%ymm2,%%ymm10,%%ymm10\n vpsrlw $4,%%ymm1,%%ymm1\n vpbroadcastq 120(%1),%%ymm11\n"                    \
  "vpshufb %%ymm1,%%ymm11,%%ymm11\n vpmaddubsw %%ymm2,%%ymm11,%%ymm11\n vpaddw %%ymm11,%%ymm3,%%ymm3\n"          \
  "vpmaddubsw %%ymm10,%%ymm7,%%ymm10\n vpsubw %%ymm10,%%ymm3,%%ymm3\n vpmaddwd 192(%1),%%ymm3,%%ymm3\n"          \
  "vcvtdq2ps %%ymm3,%%ymm3\n vbroadcastss 224(%1),%%ymm11\n vfmadd231ps %%ymm11,%%ymm3,%%ymm8\n"

// MXFP4 a8 (mxfp4_a8_avx2_tile) at one token, as it was (to 1a8eba5): 64 inputs = 32 code bytes: the nibbles split
// and looked up as 2 x E2M1 (vpshufb), sum w per lane against ones (two vpmaddubsw, the add, vpmaddwd, a shift by 7),
// then per token the biased activations (loaded: vpmaddubsw's unsigned operand) times the codes, the add, vpmaddwd,
// 128 sum w subtracted, the conversion, the scales (two broadcasts, an insert, a multiply by the lanes'), one FMA
#define MXFP4_A8_BIASED(i)                                                                                     \
  "vmovdqu (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpshufb %%ymm1,%%ymm5,%%ymm1\n vpsrlw $4,%%ymm0,%%ymm0\n"  \
  "vpand %%ymm7,%%ymm0,%%ymm0\n vpshufb %%ymm0,%%ymm5,%%ymm0\n vpmaddubsw %%ymm1,%%ymm4,%%ymm2\n"              \
  "vpmaddubsw %%ymm0,%%ymm4,%%ymm3\n vpaddw %%ymm3,%%ymm2,%%ymm2\n vpmaddwd %%ymm6,%%ymm2,%%ymm2\n"            \
  "vpslld $7,%%ymm2,%%ymm2\n vmovdqu 32(%1),%%ymm3\n vpmaddubsw %%ymm1,%%ymm3,%%ymm1\n vmovdqu 64(%1),%%ymm3\n" \
  "vpmaddubsw %%ymm0,%%ymm3,%%ymm0\n vpaddw %%ymm1,%%ymm0,%%ymm0\n vpmaddwd %%ymm6,%%ymm0,%%ymm0\n"            \
  "vpsubd %%ymm2,%%ymm0,%%ymm0\n vcvtdq2ps %%ymm0,%%ymm0\n vbroadcastss 128(%1),%%xmm1\n"                       \
  "vbroadcastss 132(%1),%%xmm2\n vinsertf128 $1,%%xmm2,%%ymm1,%%ymm1\n vmulps 96(%1),%%ymm1,%%ymm1\n"           \
  "vfmadd231ps %%ymm1,%%ymm0," ACC(i) "\n"
// MXFP4 a8 now: the magnitudes looked up (|2 x E2M1|), the low codes' signs by one shift (the code byte is the
// high codes'), and per token two vpsignb of the activations in place of the subtraction
#define MXFP4_A8_SIGN(i)                                                                                       \
  "vmovdqu (%1),%%ymm0\n vpand %%ymm7,%%ymm0,%%ymm1\n vpshufb %%ymm1,%%ymm5,%%ymm1\n vpsllw $4,%%ymm0,%%ymm3\n"  \
  "vmovdqu 32(%1),%%ymm2\n vpsignb %%ymm3,%%ymm2,%%ymm2\n vpmaddubsw %%ymm2,%%ymm1,%%ymm1\n"                    \
  "vpsrlw $4,%%ymm0,%%ymm2\n vpand %%ymm7,%%ymm2,%%ymm2\n vpshufb %%ymm2,%%ymm5,%%ymm2\n"                        \
  "vmovdqu 64(%1),%%ymm3\n vpsignb %%ymm0,%%ymm3,%%ymm3\n vpmaddubsw %%ymm3,%%ymm2,%%ymm2\n"                    \
  "vpaddw %%ymm1,%%ymm2,%%ymm2\n vpmaddwd %%ymm6,%%ymm2,%%ymm2\n vcvtdq2ps %%ymm2,%%ymm2\n"                      \
  "vbroadcastss 128(%1),%%xmm0\n vbroadcastss 132(%1),%%xmm1\n vinsertf128 $1,%%xmm1,%%ymm0,%%ymm0\n"           \
  "vmulps 96(%1),%%ymm0,%%ymm0\n vfmadd231ps %%ymm0,%%ymm2," ACC(i) "\n"
// int8 a8 (int8_a8_avx2_tile): 32 inputs = 32 code bytes: |w| (vpabsb), the activations loaded and given w's sign
// (vpsignb), vpmaddubsw, vpmaddwd, the conversion, the block scale broadcast, one FMA
#define INT8_A8(i)                                                                                             \
  "vmovdqu (%1),%%ymm0\n vpabsb %%ymm0,%%ymm1\n vmovdqu 32(%1),%%ymm2\n vpsignb %%ymm0,%%ymm2,%%ymm2\n"          \
  "vpmaddubsw %%ymm2,%%ymm1,%%ymm1\n vpmaddwd %%ymm6,%%ymm1,%%ymm1\n vcvtdq2ps %%ymm1,%%ymm1\n"                  \
  "vbroadcastss 64(%1),%%ymm3\n vfmadd231ps %%ymm3,%%ymm1," ACC(i) "\n"

int main(int argc, char** argv) {
  if (argc > 1) ghz = std::atof(argv[1]);
  if (argc > 2) iters = std::atol(argv[2]);
  BENCH("vfmadd231ps", 8, 0, R8(FMA));
  BENCH("vcvtdq2ps", 8, 0, R8(CVT));
  BENCH("vpmovzxbd (load)", 8, 0, R8(ZXBD));
  BENCH("vpand", 8, 0, R8(AND));
  BENCH("vpsrld", 8, 0, R8(SRLD));
  BENCH("vpsrlvd", 8, 0, R8(SRLVD));
  BENCH("vpermilps", 8, 0, R8(PERMILPS));
  BENCH("vblendps", 8, 0, R8(BLENDPS));
  BENCH("vpshufb", 8, 0, R8(PSHUFB));
  BENCH("vpmaddubsw", 8, 0, R8(MADDUBS));
  BENCH("vpmaddwd", 8, 0, R8(MADDWD));
  BENCH("vmovups (load)", 8, 0, R8(LOAD));
  BENCH("vpermps", 8, 0, R8(PERMPS));
  BENCH("vpermps (table from memory)", 8, 0, R8(PERMPS_MEM));
  BENCH("int4 exact, 16 weights", 4, 8, R4(INT4_EXACT));
  BENCH("mxfp4 exact by vpermps, 16 weights", 4, 8, R4(MXFP4_PERMUTE));
  BENCH("mxfp4 exact by bytes, 32 weights", 8, 17, R8(MXFP4_BYTES));
  BENCH("2:4 bf16 gather, 16 inputs", 8, 18, R8(SEMI24_GATHER));
  BENCH("int4 + 2:4 exact gather, 16 inputs", 8, 6, R8(INT4_SEMI24_GATHER));
  BENCH("int4 a8 g32/g64, 64 weights", 8, 32, R8(INT4_A8));
  BENCH("int4 a8 g128, 64 weights", 8, 32, R8(INT4_A8_CORE));
  BENCH("int4 + 2:4 a8 gather, 64 inputs", 8, 24, R8(INT4_SEMI24_A8_GATHER));
  BENCH("int4 + 2:4 a8 tiles, 64 inputs", 4, 24, INT4_SEMI24_A8_TILES);
  BENCH("mxfp4 a8 biased (1a8eba5), 64 weights", 8, 34, R8(MXFP4_A8_BIASED));
  BENCH("mxfp4 a8 sign, 64 weights", 8, 34, R8(MXFP4_A8_SIGN));
  BENCH("int8 a8, 32 weights", 8, 32, R8(INT8_A8));
  return 0;
}
