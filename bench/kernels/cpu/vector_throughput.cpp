// Throughput of 512-bit vector instructions, alone and in pairs: 8 independent chains per kind, so latency does
// not bind, and the cycles per loop iteration are the issue rate (the Zen 4 figures of docs/cpu-kernels.md: every kind 1 a
// cycle, pairs of kinds 1.3-1.4 cycles, vpermt2w + vdpbf16ps 1.9, vdpbf16ps + vfmadd231ps 2.0, 3 vdpbf16ps 3.1,
// the kernels' mixes, and the exact int4 kernel's whole chunk: 111-112 cycles per 8 rows x 128 inputs, 3.5 per
// 32 inputs). This VM's figures move by up to 40% between runs (another tenant on the core): take the lowest of
// a few runs.
// Cycles assume a fixed clock (argv[1], GHz; 3.67 on the Zen 4 VM): the ratios between lines matter more than
// the absolute numbers.
//
//   g++ -O2 -march=native -o /tmp/vector_throughput bench/kernels/cpu/vector_throughput.cpp
//   /tmp/vector_throughput 3.67
#include <chrono>
#include <cstdio>
#include <cstdlib>

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static double ghz = 3.67;
constexpr long kIters = 100000000L;

#define R8(x) x(0) x(1) x(2) x(3) x(4) x(5) x(6) x(7)
// accumulators zmm10-17, sources zmm20-27, temporaries zmm0-7, constants zmm30 (table) and zmm31
#define INIT(i) "vpxord %%zmm1" #i ",%%zmm1" #i ",%%zmm1" #i "\n vpxord %%zmm2" #i ",%%zmm2" #i ",%%zmm2" #i "\n"
#define BENCH(name, body)                                                                                          \
  {                                                                                                                \
    const double t = now();                                                                                        \
    long n = kIters;                                                                                               \
    __asm__ volatile("vpxord %%zmm30,%%zmm30,%%zmm30\n vpxord %%zmm31,%%zmm31,%%zmm31\n" R8(INIT) "1:\n" body      \
                     "dec %0\n jnz 1b\n"                                                                           \
                     : "+r"(n)::"memory", "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm10", \
                       "zmm11", "zmm12", "zmm13", "zmm14", "zmm15", "zmm16", "zmm17", "zmm20", "zmm21", "zmm22",    \
                       "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", "zmm30", "zmm31", "zmm8", "zmm9", "zmm18", "zmm19",       \
                       "zmm28", "zmm29");                             \
    std::printf("%-24s %6.2f cycles per 8\n", name, (now() - t) * ghz * 1e9 / kIters);                            \
  }
#define FMA(i) "vfmadd231ps %%zmm31,%%zmm30,%%zmm1" #i "\n"
#define CVT(i) "vcvtdq2ps %%zmm2" #i ",%%zmm" #i "\n"
#define PERMPS(i) "vpermps %%zmm30,%%zmm2" #i ",%%zmm" #i "\n"
#define ZXBD(i) "vpmovzxbd %%xmm2" #i ",%%zmm" #i "\n"
#define PERMW(i) "vpermw %%zmm30,%%zmm2" #i ",%%zmm" #i "\n"
#define PT2W(i) "vpermt2w %%zmm30,%%zmm2" #i ",%%zmm" #i "\n"
#define DPBF(i) "vdpbf16ps %%zmm31,%%zmm2" #i ",%%zmm1" #i "\n"
#define CVT_FMA(i) CVT(i) "vfmadd231ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
#define PERMPS_FMA(i) PERMPS(i) "vfmadd231ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
#define ZX_CVT_FMA(i) "vpmovzxbd %%xmm2" #i ",%%zmm" #i "\n vcvtdq2ps %%zmm" #i ",%%zmm" #i "\n" \
  "vfmadd231ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
#define PERMW_DPBF(i) PERMW(i) "vdpbf16ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
#define PT2W_DPBF(i) PT2W(i) "vdpbf16ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
// the bf16-parts kernels' mixes per 32 inputs of a row with fp32 activations (3 parts): int4 (3 dot products, a
// lookup, 0.75 shifts: one shift here), and per 64 inputs int4 + 2:4's decode, index, gather, dot and scale FMA
#define SRLW(i) "vpsrlw $4,%%zmm2" #i ",%%zmm" #i "\n"
#define DPBF3(i) DPBF(i) "vdpbf16ps %%zmm30,%%zmm2" #i ",%%zmm1" #i "\n" "vdpbf16ps %%zmm31,%%zmm" #i ",%%zmm1" #i "\n"
#define INT4_MIX(i) PERMW(i) SRLW(i) DPBF3(i)
#define KEPT_MIX(i) "vpsrlvw %%zmm30,%%zmm2" #i ",%%zmm" #i "\n vpmultishiftqb %%zmm2" #i ",%%zmm30,%%zmm" #i "\n" \
  "vpternlogd $0xf8,%%zmm30,%%zmm31,%%zmm" #i "\n" PT2W(i) PERMW(i) DPBF(i) FMA(i)

// vdpbf16ps and vfmadd231ps share the FMA pipes (a pair issues at 2 cycles, unlike other pairs): a bf16 dot product
// costs what an FMA does. The fp32 lookup kernel's mix per 16 weights and token: a shift, a vpermps, an FMA (the
// activations a memory operand)
#define DPBF_FMA(i) DPBF(i) "vfmadd231ps %%zmm31,%%zmm2" #i ",%%zmm" #i "\n"
#define LOOKUP_MIX(i) "vpsrld $4,%%zmm2" #i ",%%zmm" #i "\n vpermps %%zmm30,%%zmm" #i ",%%zmm" #i "\n" \
  "vfmadd231ps (%%rsp),%%zmm" #i ",%%zmm1" #i "\n"

// The exact int4 kernel's whole work for one row and 128-input chunk at one token on fp32 activations (3 bf16
// parts, g128): 4 lookups, 3 shifts, 12 dot products with the activations from L1, the two chains' add and the
// scale FMA; 8 rows a step as the kernel (gemm_nibble_bf16.cpp), each row's chains started afresh. Per 8 rows:
// 32 x 32 inputs. Registers: lookup t, chains a and b, accumulator c.
#define ROW_PHASE(t, a, sh, off)                                                                       \
  sh "vpermw %%zmm30," t "," t "\n vdpbf16ps " off "(%%rsp)," t "," a "\n vdpbf16ps " off "+64(%%rsp)," t "," a \
     "\n vdpbf16ps " off "+128(%%rsp)," t "," a "\n"
#define INT4_CHUNK_ROW(t, a, b, c)                                                                          \
  "vpxord " a "," a "," a "\n vpxord " b "," b "," b "\n vmovdqa64 %%zmm29," t "\n"                            \
  ROW_PHASE(t, a, "", "0") ROW_PHASE(t, b, "vpsrlw $4,%%zmm29," t "\n", "192")                               \
  ROW_PHASE(t, a, "vpsrlw $8,%%zmm29," t "\n", "384") ROW_PHASE(t, b, "vpsrlw $12,%%zmm29," t "\n", "576")   \
  "vaddps " a "," b "," a "\n vfmadd231ps %%zmm31," a "," c "\n"
#define INT4_CHUNK_8ROWS                                                                                       \
  INT4_CHUNK_ROW("%%zmm0", "%%zmm8", "%%zmm16", "%%zmm24") INT4_CHUNK_ROW("%%zmm1", "%%zmm9", "%%zmm17", "%%zmm25")  \
  INT4_CHUNK_ROW("%%zmm2", "%%zmm10", "%%zmm18", "%%zmm26") INT4_CHUNK_ROW("%%zmm3", "%%zmm11", "%%zmm19", "%%zmm27") \
  INT4_CHUNK_ROW("%%zmm4", "%%zmm12", "%%zmm20", "%%zmm24") INT4_CHUNK_ROW("%%zmm5", "%%zmm13", "%%zmm21", "%%zmm25") \
  INT4_CHUNK_ROW("%%zmm6", "%%zmm14", "%%zmm22", "%%zmm26") INT4_CHUNK_ROW("%%zmm7", "%%zmm15", "%%zmm23", "%%zmm27")

int main(int argc, char** argv) {
  if (argc > 1) ghz = std::atof(argv[1]);
  BENCH("vfmadd231ps", R8(FMA));
  BENCH("vcvtdq2ps", R8(CVT));
  BENCH("vpermps", R8(PERMPS));
  BENCH("vpmovzxbd", R8(ZXBD));
  BENCH("vpermw", R8(PERMW));
  BENCH("vpermt2w", R8(PT2W));
  BENCH("vdpbf16ps", R8(DPBF));
  BENCH("cvt + fma", R8(CVT_FMA));
  BENCH("vpermps + fma", R8(PERMPS_FMA));
  BENCH("zx + cvt + fma", R8(ZX_CVT_FMA));
  BENCH("vpermw + vdpbf16ps", R8(PERMW_DPBF));
  BENCH("vpermt2w + vdpbf16ps", R8(PT2W_DPBF));
  BENCH("3 vdpbf16ps", R8(DPBF3));
  BENCH("int4 mix (5)", R8(INT4_MIX));
  BENCH("int4 + 2:4 mix (7)", R8(KEPT_MIX));
  BENCH("vdpbf16ps + vfmadd231ps", R8(DPBF_FMA));
  BENCH("lookup mix (3)", R8(LOOKUP_MIX));
  BENCH("int4 chunk, 8 rows (32)", INT4_CHUNK_8ROWS);
  return 0;
}
