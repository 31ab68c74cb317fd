// sparsekit._cpu: the CPU kernels of the packed layouts (gemm_avx512.cpp, gemm_avx2.cpp, gemm_scalar.cpp)
// behind one checked entry point. Checks shapes, dtypes and devices and says which constraint failed; picks
// the SIMD path at run time from the CPU's features ('auto': AVX-512, else AVX2, else scalar; `path` forces
// one); threads over output rows with at::parallel_for.
//
// Decode (M <= kDecodeRows tokens) streams each packed row once per tile of 8 tokens and never
// materialises W. Prefill dequantizes tiles of rows into a 16 MiB buffer and multiplies them with BLAS
// (at::mm; in bf16 for bf16 activations): at 17+ tokens every weight feeds enough FMAs that decoding it
// once per tile is cheap, and the BLAS microkernels are what a hand-written loop would not beat.
// acts = "int8" is the a8 variant (gemm_avx512_vnni.cpp, and gemm_avx2.cpp for CPUs without VNNI): activations
// in int8 blocks of 32. 2:4 with bf16 values meets bf16 activations (a bf16 model) at decode in
// gemm_avx512_bf16.cpp where the CPU has AVX512_BF16: bf16 pairs into vdpbf16ps, the products exact. int4,
// MXFP4 and int4 + 2:4 with fp32 activations at 2-16 tokens: gemm_lookup_fp32.cpp (looked-up fp32 weights, FMA
// tiles).
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>  // madvise
#endif

#include "packed_cpu.h"

#ifndef SPARSEKIT_VERSION
#define SPARSEKIT_VERSION unknown
#endif
#define SPARSEKIT_STR2(x) #x
#define SPARSEKIT_STR(x) SPARSEKIT_STR2(x)

namespace {

using sparsekit::cpu::Kind;
using sparsekit::cpu::Packed;
using sparsekit::cpu::ValueType;

constexpr int64_t kDecodeRows = 16;

// Rows of a prefill tile: 16 MiB of fp32 rows. BLAS packs the activations again for every call, so a tile must hold
// enough rows to amortise that (measured, 4096 x 14336 at M = 512, one thread: 1344 ms with L2-sized tiles of 18
// rows, 477 ms with 16 MiB ones; dense fp32 404 ms), and no fp32 copy of a whole weight is ever held.
int64_t prefill_tile_rows(int64_t n, int64_t k) {
  return std::max<int64_t>(16, std::min<int64_t>(n, (int64_t(1) << 22) / k));
}

bool cpu_has_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = sparsekit::cpu::avx512_compiled() && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vbmi") &&
                         __builtin_cpu_supports("avx512vbmi2");
  return ok;
#else
  return false;
#endif
}

// AVX2 with FMA and F16C (the fp16 scales): every x86-64 CPU since Haswell / Zen 1
bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = sparsekit::cpu::avx2_compiled() && __builtin_cpu_supports("avx2") &&
                         __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

// What the AVX2 path lacks here: the features this CPU does not have, or the build
std::string avx2_missing() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!sparsekit::cpu::avx2_compiled()) return "this build has no AVX2 kernels (compiled for another compiler)";
  std::string missing;  // __builtin_cpu_supports takes a literal only
  if (!__builtin_cpu_supports("avx2")) missing += " avx2";
  if (!__builtin_cpu_supports("fma")) missing += " fma";
  if (!__builtin_cpu_supports("f16c")) missing += " f16c";
  return "this CPU lacks" + missing;
#else
  return "this build has no AVX2 kernels (not x86-64)";
#endif
}

bool cpu_has_a8() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = cpu_has_avx512() && sparsekit::cpu::a8_compiled() &&
                         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  return ok;
#else
  return false;
#endif
}

// AVX512_BF16 (vdpbf16ps) next to the AVX-512 path: Zen 4, Cooper Lake and Intel cores since Sapphire Rapids
bool cpu_has_bf16_dot() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool ok = cpu_has_avx512() && sparsekit::cpu::bf16_dot_compiled() &&
                         __builtin_cpu_supports("avx512bf16");
  return ok;
#else
  return false;
#endif
}

// the activations of a decode call prepared for the layout's bf16-parts kernel, or false where none serves it
bool bf16_parts_prepared(const Packed& p, const float* x, int64_t m, sparsekit::cpu::BfActs& nb) {
  if (sparsekit::cpu::nibble_chunks_fit(p)) return sparsekit::cpu::prepare_nibble_bf16(p, x, m, nb);
  if (sparsekit::cpu::int4_semi24_bf16_fits(p)) return sparsekit::cpu::prepare_kept_bf16(p, x, m, nb);
  return false;
}

// Where the decode loops prefetch the weight streams (packed_cpu.h, `prefetch_ahead`). The default is measured
// per vendor; SPARSEKIT_CPU_PREFETCH="l1:2048" / "l2:8192" (level:bytes) overrides it, to measure another.
//   Intel (a Xeon, AVX-512): into L1, 2 KB ahead (without any prefetch, int4 4096 x 14336 ran at 8.7 ms from
//   DRAM against 4.0 ms from L3 there).
//   AMD Zen 4: into L2, 8 KB ahead. prefetcht0 holds one of the core's few L1 miss buffers until its line
//   arrives, which caps what one core has in flight at 2 KB ahead; prefetcht1 is tracked by L2. One thread,
//   4096 x 14336, M = 1, against l1:2048 (bench/results/cpu/ab_prefetch_zen4_*.json): 2:4 bf16 and the a8
//   kernels 10-33% faster; 3 KB to 16 KB ahead measure alike within the machine's noise except int4 a8
//   (8 KB: 20% faster than 3 KB).
struct PrefetchPlan {
  int64_t distance = 2048;
  bool l2 = false;
};

PrefetchPlan parse_prefetch(const std::string& spec) {
  const auto colon = spec.find(':');
  const std::string level = spec.substr(0, colon);
  TORCH_CHECK(colon != std::string::npos && (level == "l1" || level == "l2"),
              "SPARSEKIT_CPU_PREFETCH must be 'l1:BYTES' or 'l2:BYTES', got '", spec, "'");
  char* end = nullptr;
  const long long bytes = std::strtoll(spec.c_str() + colon + 1, &end, 10);
  TORCH_CHECK(end && *end == '\0' && bytes >= 64 && bytes <= (1 << 20) && bytes % 64 == 0,
              "SPARSEKIT_CPU_PREFETCH: the distance must be a multiple of 64 bytes in [64, 1 MiB], got '", spec, "'");
  return PrefetchPlan{bytes, level == "l2"};
}

// read once per process (a decode makes hundreds of calls a token)
PrefetchPlan prefetch_plan() {
  static const PrefetchPlan plan = [] {
    const char* env = std::getenv("SPARSEKIT_CPU_PREFETCH");
    if (env && *env) return parse_prefetch(env);
#if defined(__x86_64__) && defined(__GNUC__)
    // AMD with AVX-512 (Zen 4 and later), where it was measured; Zen 3 keeps the L1 plan it was measured with
    if (__builtin_cpu_is("amd") && __builtin_cpu_supports("avx512f")) return PrefetchPlan{8192, true};
#endif
    return PrefetchPlan{};
  }();
  return plan;
}

void check_u8(const char* op, const char* name, const torch::Tensor& t, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols, op, ": ", name, " must have shape [", rows,
              ", ", cols, "], got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
}

// Whether the SIMD decoders (16 inputs a step, AVX-512 and AVX2 alike) can read this layout (else the scalar
// path runs): a step must not straddle two groups.
bool simd_fits(const Packed& p) {
  if (p.kind == Kind::kInt4 || p.kind == Kind::kInt4Semi24) return p.group % 16 == 0 || p.group >= p.k;
  return true;
}

// The path that runs: 'avx512', 'avx2' or 'scalar'. A forced SIMD path the CPU or the layout cannot take is an
// error naming why; 'auto' takes the widest one that can.
std::string path_of(const Packed& p, const std::string& want) {
  TORCH_CHECK(want == "auto" || want == "avx512" || want == "avx2" || want == "scalar",
              "packed_linear[cpu]: path must be 'auto', 'avx512', 'avx2' or 'scalar', got '", want, "'");
  if (want == "avx512") {
    TORCH_CHECK(cpu_has_avx512(), "packed_linear[cpu]: this CPU lacks AVX-512 F/BW/VL/DQ/VBMI/VBMI2");
    TORCH_CHECK(simd_fits(p), "packed_linear[cpu]: the AVX-512 path needs group_size % 16 == 0 (or one group "
                "per row), got ", p.group);
  }
  if (want == "avx2") {
    TORCH_CHECK(cpu_has_avx2(), "packed_linear[cpu]: the AVX2 path is unavailable: ", avx2_missing());
    TORCH_CHECK(simd_fits(p), "packed_linear[cpu]: the AVX2 path needs group_size % 16 == 0 (or one group "
                "per row), got ", p.group);
  }
  if (want != "auto") return want;
  if (!simd_fits(p)) return "scalar";
  return cpu_has_avx512() ? "avx512" : cpu_has_avx2() ? "avx2" : "scalar";
}

// With SPARSEKIT_HUGE_PAGES=1 (exactly; as sparsekit.utils.pages reads it), a weight copy this extension builds goes
// on 2 MiB pages, as that module places the stored weights: one core streams memory faster from them (the
// prefetchers stop at every 4 KiB page boundary); opt-in for the reasons the module gives. `before_fill`: advised
// before the first write, fresh memory faults in huge pages with no copy; after the fill, MADV_COLLAPSE moves what
// the allocator handed out already written (recycled heap). A refusal costs only speed.
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older C headers lack it, older kernels answer EINVAL
#endif
void advise_huge_pages(void* ptr, int64_t bytes, bool before_fill) {
#ifdef __linux__
  const char* env = std::getenv("SPARSEKIT_HUGE_PAGES");
  if (env == nullptr || std::string(env) != "1") return;
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) / kHuge * kHuge;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(ptr) + static_cast<uintptr_t>(bytes)) / kHuge * kHuge;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, before_fill ? MADV_HUGEPAGE : MADV_COLLAPSE);
#else
  (void)ptr;
  (void)bytes;
  (void)before_fill;
#endif
}

// The a8 kernels of int4 + 2:4 read their weight in an order of their own (`Int4Semi24Tiles` for VNNI,
// `Int4Semi24TilesAvx2` for AVX2: packed_cpu.h), built from the stored tensors on the first call, one per order.
// An entry holds weak references to their storage: once the weight is gone, its copy is freed at the next lookup
// or `a8_tiles_bytes()` call. It also holds their version
// counters: a tensor changed in place by a torch op since builds it again. Writes that bypass the counter (through
// `.data`, a NumPy view, an inference tensor inside inference mode) are not seen: `a8_tiles_clear()` drops every
// copy. A copy is as large as the stored codes, positions and scales (`a8_tiles_bytes()` says how much is held).
class TilesCache {
 public:
  struct Tiles {
    torch::Tensor stream, scales, zeros;  // zeros undefined when symmetric
  };

  Tiles get(const Packed& p, sparsekit::cpu::A8Path path, const torch::Tensor& codes, const torch::Tensor& meta,
            const torch::Tensor& scales, const c10::optional<torch::Tensor>& zeros) {
    const torch::Tensor none;
    const torch::Tensor* src[4] = {&codes, &meta, &scales, zeros.has_value() ? &*zeros : &none};
    auto version = [](const torch::Tensor& t) -> int64_t {
      return !t.defined() ? -1 : t.is_inference() ? -2 : t._version();
    };
    std::lock_guard<std::mutex> lock(mu_);
    purge();
    Entry* stale = nullptr;  // the same tensors changed in place since: rebuilt in its place
    for (auto& e : entries_) {
      bool same = e.path == path && e.n == p.n && e.k == p.k && e.group == p.group, current = true;
      for (int i = 0; i < 4 && same; ++i) {
        same = e.ptr[i] == (src[i]->defined() ? src[i]->data_ptr() : nullptr);
        current = current && e.version[i] == version(*src[i]);
      }
      if (same && current) return e.tiles;
      if (same) stale = &e;
    }
    Entry e;
    e.path = path;
    e.n = p.n;
    e.k = p.k;
    e.group = p.group;
    for (int i = 0; i < 4; ++i) {
      e.ptr[i] = src[i]->defined() ? src[i]->data_ptr() : nullptr;
      e.version[i] = version(*src[i]);
      if (src[i]->defined()) e.storage[i] = src[i]->storage().getWeakStorageImpl();
    }
    using V = sparsekit::cpu::Int4Semi24Tiles;
    using A = sparsekit::cpu::Int4Semi24TilesAvx2;
    const bool vnni = path == sparsekit::cpu::A8Path::kVnni;
    const int64_t rows = vnni ? V::kRows : A::kRows, tiles = vnni ? V::tiles(p.n) : A::tiles(p.n), G = p.groups();
    auto u8 = torch::TensorOptions().dtype(torch::kUInt8);
    e.tiles.stream = torch::empty({vnni ? V::stream_bytes(p.n, p.k) : A::stream_bytes(p.n, p.k)}, u8);
    e.tiles.scales = torch::empty({tiles * G * rows}, torch::TensorOptions().dtype(torch::kFloat16));
    if (p.zeros) e.tiles.zeros = torch::empty({tiles * G * rows}, u8);
    uint8_t* stream = e.tiles.stream.data_ptr<uint8_t>();
    advise_huge_pages(stream, e.tiles.stream.nbytes(), /*before_fill=*/true);
    auto* sc = reinterpret_cast<uint16_t*>(e.tiles.scales.data_ptr());
    uint8_t* zp = p.zeros ? e.tiles.zeros.data_ptr<uint8_t>() : nullptr;
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      if (vnni) {
        sparsekit::cpu::repack_int4_semi24_tiles(p, stream, sc, zp, t0, t1);
      } else {
        sparsekit::cpu::repack_int4_semi24_tiles_avx2(p, stream, sc, zp, t0, t1);
      }
    });
    advise_huge_pages(stream, e.tiles.stream.nbytes(), /*before_fill=*/false);
    if (stale) {
      *stale = std::move(e);
      return stale->tiles;
    }
    entries_.push_back(std::move(e));
    return entries_.back().tiles;
  }

  int64_t bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    purge();
    int64_t total = 0;
    for (const auto& e : entries_)
      for (const auto* t : {&e.tiles.stream, &e.tiles.scales, &e.tiles.zeros})
        if (t->defined()) total += t->nbytes();
    return total;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
  }

 private:
  // frees the copies of weights that are gone (called with mu_ held)
  void purge() {
    for (size_t i = 0; i < entries_.size();) {
      bool gone = false;
      for (const auto& w : entries_[i].storage) gone = gone || (w.has_value() && w->expired());
      if (gone) {
        entries_[i] = std::move(entries_.back());
        entries_.pop_back();
      } else {
        ++i;
      }
    }
  }

  struct Entry {
    sparsekit::cpu::A8Path path = sparsekit::cpu::A8Path::kVnni;
    int64_t n = 0, k = 0, group = 0;
    const void* ptr[4] = {};
    int64_t version[4] = {};
    c10::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> storage[4];
    Tiles tiles;
  };
  std::mutex mu_;
  std::vector<Entry> entries_;
};

TilesCache& tiles_cache() {
  static TilesCache* cache = new TilesCache();  // never destroyed: tensors must not be freed after torch is gone
  return *cache;
}

torch::Tensor linear(const torch::Tensor& x, int64_t kind, int64_t n, int64_t k,
                     const c10::optional<torch::Tensor>& values, const c10::optional<torch::Tensor>& codes,
                     const c10::optional<torch::Tensor>& meta, const c10::optional<torch::Tensor>& scales,
                     const c10::optional<torch::Tensor>& zeros, int64_t group, const c10::optional<torch::Tensor>& bias,
                     const std::string& path, const std::string& acts) {
  const char* op = "packed_linear[cpu]";
  TORCH_CHECK(acts == "float" || acts == "int8", op, ": acts must be 'float' (exact) or 'int8' (a8: activations in "
              "int8 blocks of 32), got '", acts, "'");
  TORCH_CHECK(x.device().is_cpu(), op, ": the input must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16, op,
              ": activations must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == k, op, ": input has ", x.size(-1), " features but the weight has "
              "in_features=", k);
  TORCH_CHECK(n >= 1 && k >= 1, op, ": empty weight ", n, " x ", k);
  Packed p;
  p.kind = static_cast<Kind>(kind);
  p.n = n;
  p.k = k;
  p.group = group;
  const PrefetchPlan plan = prefetch_plan();
  p.prefetch_distance = plan.distance;
  p.prefetch_l2 = plan.l2;
  auto need = [&](const c10::optional<torch::Tensor>& t, const char* name) -> const torch::Tensor& {
    TORCH_CHECK(t.has_value(), op, ": this layout needs its ", name, " tensor");
    return *t;
  };
  auto group_tensors = [&](int64_t cols_per_row) {
    TORCH_CHECK(group >= 1, op, ": group_size must be >= 1, got ", group);
    const int64_t G = p.groups();
    const auto& s = need(scales, "scales");
    TORCH_CHECK(s.scalar_type() == torch::kFloat16, op, ": scales must be float16, got ", s.scalar_type());
    check_u8(op, "scales", s, n, G);
    p.scales = reinterpret_cast<const uint16_t*>(s.data_ptr());
    if (zeros.has_value()) {
      TORCH_CHECK(zeros->scalar_type() == torch::kUInt8, op, ": zeros must be uint8");
      check_u8(op, "zeros", *zeros, n, G);
      p.zeros = zeros->data_ptr<uint8_t>();
    }
    const auto& c = need(codes, "codes");
    TORCH_CHECK(c.scalar_type() == torch::kUInt8, op, ": codes must be uint8, got ", c.scalar_type());
    check_u8(op, "codes", c, n, cols_per_row);
    p.codes = c.data_ptr<uint8_t>();
  };
  auto meta_tensor = [&]() {
    TORCH_CHECK(k % 8 == 0, op, ": 2:4 layouts need in_features % 8 == 0, got ", k);
    const auto& m = need(meta, "meta");
    TORCH_CHECK(m.scalar_type() == torch::kUInt8, op, ": meta must be uint8");
    check_u8(op, "meta", m, n, k / 8);
    p.meta = m.data_ptr<uint8_t>();
  };
  switch (p.kind) {
    case Kind::kSemi24: {
      meta_tensor();
      const auto& v = need(values, "values");
      TORCH_CHECK(v.dim() == 2 && v.size(0) == n && v.size(1) == k / 2 && v.is_contiguous() && v.device().is_cpu(),
                  op, ": values must be a contiguous CPU [", n, ", ", k / 2, "] tensor, got ", v.sizes());
      const auto t = v.scalar_type();
      TORCH_CHECK(t == torch::kFloat32 || t == torch::kBFloat16 || t == torch::kFloat16, op,
                  ": 2:4 values must be float32/bfloat16/float16, got ", t);
      p.value_type = t == torch::kFloat32 ? ValueType::kFloat32
                     : t == torch::kBFloat16 ? ValueType::kBFloat16 : ValueType::kFloat16;
      p.values = v.data_ptr();
      break;
    }
    case Kind::kInt4:
      TORCH_CHECK(k % 2 == 0, op, ": int4 nibbles need an even in_features, got ", k);
      group_tensors(k / 2);
      break;
    case Kind::kInt4Semi24:
      meta_tensor();
      TORCH_CHECK(group % 4 == 0, op, ": int4 + 2:4 needs group_size % 4 == 0, got ", group);
      group_tensors(k / 4);
      break;
    case Kind::kMXFP4: {
      TORCH_CHECK(k % 32 == 0, op, ": MXFP4 needs in_features % 32 == 0, got ", k);
      const auto& c = need(codes, "codes");
      TORCH_CHECK(c.scalar_type() == torch::kUInt8, op, ": codes must be uint8, got ", c.scalar_type());
      check_u8(op, "codes", c, n, k / 2);
      const auto& s = need(scales, "scales");
      TORCH_CHECK(s.scalar_type() == torch::kUInt8, op, ": MXFP4 scales are uint8 E8M0 exponents");
      check_u8(op, "scales", s, n, k / 32);
      p.codes = c.data_ptr<uint8_t>();
      p.e8m0 = s.data_ptr<uint8_t>();
      break;
    }
    case Kind::kInt8: {
      const auto& c = need(codes, "codes");
      TORCH_CHECK(c.scalar_type() == torch::kInt8, op, ": int8 codes must be int8, got ", c.scalar_type());
      check_u8(op, "codes", c, n, k);
      const auto& s = need(scales, "scales");
      TORCH_CHECK(s.scalar_type() == torch::kFloat16 && s.dim() == 1 && s.size(0) == n && s.is_contiguous(), op,
                  ": int8 scales must be a contiguous float16 [", n, "] tensor");
      p.codes = reinterpret_cast<const uint8_t*>(c.data_ptr<int8_t>());
      p.scales = reinterpret_cast<const uint16_t*>(s.data_ptr());
      break;
    }
    default: TORCH_CHECK(false, op, ": unknown layout kind ", kind);
  }
  const std::string use = path_of(p, path);
  const bool a8 = acts == "int8";
  if (a8) {
    TORCH_CHECK(p.kind == Kind::kInt4 || p.kind == Kind::kInt4Semi24 || p.kind == Kind::kMXFP4 ||
                    p.kind == Kind::kInt8,
                op, ": int8 activations (a8) serve the int4, int4 + 2:4, MXFP4 and int8 layouts only");
    TORCH_CHECK(sparsekit::cpu::a8_fits(p), op, ": int8 activations (a8) need in_features % 32 == 0 and group_size "
                "% 32 == 0 (or one group per row), got in_features=", k, ", group_size=", group);
  }
  // a bf16 model's 2:4 bf16 layers at decode multiply the bf16 activations as they come (vdpbf16ps,
  // gemm_avx512_bf16.cpp): half the instructions per token of the fp32 kernel, the same exact products. (Until one
  // token took one row a step there, rows shorter than 1024 inputs ran faster on the fp32 kernel; now the bf16
  // kernel is the faster at K = 576 too: Zen 4, one thread, ab_builds.py: -8% on 1536 x 576 from DRAM, -11% on
  // 576 x 576 from L3.)
  const int64_t rows_in = x.numel() / k;
  const bool bf16_dot = !a8 && use == "avx512" && rows_in <= kDecodeRows &&
                        p.kind == Kind::kSemi24 && p.value_type == ValueType::kBFloat16 &&
                        x.scalar_type() == torch::kBFloat16 && cpu_has_bf16_dot();
  auto x2 = bf16_dot ? x.reshape({-1, k}).contiguous() : x.reshape({-1, k}).to(torch::kFloat32).contiguous();
  const int64_t m = x2.size(0);
  // the a8 decode kernels: AVX-512 VNNI where the CPU has it, else AVX2 (an AVX-512 path without VNNI, or
  // path = 'avx2', which forces them where VNNI is present too)
  sparsekit::cpu::A8RowsFn a8_rows = nullptr;
  auto a8_path = sparsekit::cpu::A8Path::kVnni;
  if (a8 && m <= kDecodeRows) {
    if (use == "avx512" && cpu_has_a8()) {
      a8_rows = sparsekit::cpu::rows_a8;
    } else if ((use == "avx512" || use == "avx2") && cpu_has_avx2()) {
      a8_rows = sparsekit::cpu::rows_a8_avx2;
      a8_path = sparsekit::cpu::A8Path::kAvx2;
    }
  }
  if (a8 && !a8_rows && m > 0) {
    // the exact kernels on d * q: the same product as the a8 kernels (prefill, the scalar path)
    auto fq = torch::empty_like(x2);
    sparsekit::cpu::fake_quant_acts(x2.data_ptr<float>(), m, k, fq.data_ptr<float>());
    x2 = fq;
  }
  c10::optional<torch::Tensor> b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->size(0) == n, op, ": bias must be a CPU [", n,
                "] tensor");
    b = bias->to(torch::kFloat32).contiguous();
  }
  auto out = torch::empty({m, n}, x2.options().dtype(torch::kFloat32));
  // decode: one contiguous range of rows per thread: every row costs the same, and each call prepares the
  // activations once (rearranged into the nibble kernels' chunk order, split into bf16 parts, quantized to int8)
  // for all its rows
  const int64_t grain = std::max<int64_t>(16, (n + at::get_num_threads() - 1) / at::get_num_threads());
  float* op_ = out.data_ptr<float>();
  const float* bp = b.has_value() ? b->data_ptr<float>() : nullptr;
  if (m > 0 && bf16_dot) {
    const auto* xp = reinterpret_cast<const uint16_t*>(x2.data_ptr());
    at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
      sparsekit::cpu::rows_semi24_bf16_dot(p, xp, m, op_, bp, n0, n1);
    });
  } else if (m > 0) {
    const float* xp = x2.data_ptr<float>();
    sparsekit::cpu::BfActs nb;
    if (a8_rows) {
      sparsekit::cpu::QActs qa;
      sparsekit::cpu::quantize_acts(p, xp, m, qa, a8_path);
      if (p.kind == Kind::kInt4Semi24) {
        // R rows a tile (16 for VNNI, 8 for AVX2): threads take whole tiles
        const auto tiles = tiles_cache().get(p, a8_path, *codes, *meta, *scales, zeros);
        p.tiles = tiles.stream.data_ptr<uint8_t>();
        p.tile_scales = reinterpret_cast<const uint16_t*>(tiles.scales.data_ptr());
        p.tile_zeros = tiles.zeros.defined() ? tiles.zeros.data_ptr<uint8_t>() : nullptr;
        const int64_t R = a8_path == sparsekit::cpu::A8Path::kVnni ? sparsekit::cpu::Int4Semi24Tiles::kRows
                                                                   : sparsekit::cpu::Int4Semi24TilesAvx2::kRows;
        at::parallel_for(0, (n + R - 1) / R, (grain + R - 1) / R, [&](int64_t t0, int64_t t1) {
          a8_rows(p, qa, m, op_, bp, t0 * R, std::min(n, t1 * R));
        });
      } else {
        at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) { a8_rows(p, qa, m, op_, bp, n0, n1); });
      }
    } else if (m >= 2 && m <= kDecodeRows && use == "avx512" && x.scalar_type() == torch::kFloat32 &&
               (sparsekit::cpu::nibble_chunks_fit(p) || sparsekit::cpu::int4_semi24_f32_fits(p))) {
      // int4 / MXFP4 / int4 + 2:4 with fp32 activations at 2+ tokens: fp32 lookup and FMA tiles
      // (gemm_lookup_fp32.cpp). The lookup is shared by the tile's tokens, and the FMAs left are 2 per 32 weights
      // and token (int4 + 2:4: 1 and a gather) against the bf16-parts kernels' 3 dot products on the same pipes
      // (4096 x 14336, one thread, ab_builds.py p10 against the parts kernels: int4 5.1 against 8.5 ms at 4 tokens,
      // 19.3 against 33.9 at 16; int4 + 2:4 5.5 against 8.0 and 21.1 against 32.4; docs/cpu-kernels.md).
      if (p.kind == Kind::kInt4Semi24) {
        at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
          sparsekit::cpu::rows_int4_semi24_f32(p, xp, m, op_, bp, n0, n1);
        });
      } else {  // the activations rearranged once for all threads
        sparsekit::cpu::F32Acts fa;
        sparsekit::cpu::prepare_nibble_f32(p, xp, m, fa);
        at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) {
          sparsekit::cpu::rows_nibble_f32(p, fa, m, op_, bp, n0, n1);
        });
      }
    } else if (m <= kDecodeRows && use == "avx512" && cpu_has_bf16_dot() && bf16_parts_prepared(p, xp, m, nb)) {
      // int4 / MXFP4 (gemm_nibble_bf16.cpp) and int4 + 2:4 (gemm_avx512_bf16.cpp) at one token or on bf16
      // activations, exact decode through vdpbf16ps on the activations' exact bf16 parts (prepared into `nb` once
      // for all threads), where the CPU has AVX512_BF16; calls with non-finite or |x| >= 2^127 activations take
      // the fp32 kernels. At one token the parts kernels beat the lookup tiles (int4 2.0 against 2.6 ms: the
      // lookup is not shared); on bf16 activations they need one dot product per 32 weights and token.
      const auto rows_bf16 = p.kind == Kind::kInt4Semi24 ? sparsekit::cpu::rows_int4_semi24_bf16
                                                         : sparsekit::cpu::rows_nibble_bf16;
      at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) { rows_bf16(p, nb, m, op_, bp, n0, n1); });
    } else if (m <= kDecodeRows) {
      const sparsekit::cpu::RowsFn rows = use == "avx512" ? sparsekit::cpu::rows_avx512
                                          : use == "avx2"   ? sparsekit::cpu::rows_avx2
                                                            : sparsekit::cpu::rows_scalar;
      at::parallel_for(0, n, grain, [&](int64_t n0, int64_t n1) { rows(p, xp, m, op_, bp, n0, n1); });
    } else {
      const sparsekit::cpu::DequantFn dequant = use == "avx512" ? sparsekit::cpu::dequant_avx512
                                                : use == "avx2"   ? sparsekit::cpu::dequant_avx2
                                                                  : sparsekit::cpu::dequant_scalar;
      // Dequantized tiles of `prefill_tile_rows` rows, multiplied by BLAS. bfloat16 activations multiply the
      // tile in bfloat16 (AMX / AVX512-BF16 where oneDNN has them: 2-3x the fp32 rate), as a bf16 model's
      // dense layers do; the weight's dequantized values are rounded to bf16 for it (2^-9 relative).
      // Without AVX512_BF16 (AVX2 CPUs: AMD Zen 1-3, Intel client cores) torch's bf16 matmul has no bf16 instruction
      // to run on and is several times slower than fp32 (Zen 3, SmolLM2's 128-token prefill in a bf16 model: 1.8 s
      // against 0.3 s in fp32): the activations are widened (exactly) and the tile multiplied in fp32 there.
      const int64_t tile = prefill_tile_rows(n, k);
      const bool bf16 = x.scalar_type() == torch::kBFloat16 && cpu_has_bf16_dot();
      const auto xb = bf16 ? x2.to(torch::kBFloat16) : x2;
      auto buf = torch::empty({tile, k}, x2.options());
      for (int64_t n0 = 0; n0 < n; n0 += tile) {
        const int64_t rows_here = std::min(tile, n - n0);
        float* dst = buf.data_ptr<float>();
        at::parallel_for(n0, n0 + rows_here, 8, [&](int64_t a, int64_t z) { dequant(p, dst + (a - n0) * k, a, z); });
        const auto w = buf.narrow(0, 0, rows_here);
        out.narrow(1, n0, rows_here).copy_(at::mm(xb, (bf16 ? w.to(torch::kBFloat16) : w).t()));
      }
      if (b.has_value()) out.add_(*b);
    }
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return out.to(x.scalar_type()).reshape(shape);
}

// --------------------------------------------------------------------------------------------------------
// The CPU kernel of the custom op sparsekit::packed_linear (declared in Python, sparsekit/ops/packed_linear.py).
// A compiled graph (torch.compile, torch.export) calls the op through the dispatcher, and torch.library's
// Python kernel costs tens of microseconds a call: more than a SmolLM2 projection's whole GEMV, 210 times
// a token. Registered here for the CPU dispatch key, the op runs these kernels with no Python frame. What
// it does not serve is handed to the Python implementation (sparsekit::packed_linear_py), which decides
// exactly as before: an explicit backend other than cpu, 'auto' while the Triton interpreter is on (the
// auto order puts Triton before cpu then), a layout kind this file has no kernel for, other dtypes.

struct Spec {
  int64_t kind = -1;  // a Kind, or -1: not a layout of this extension
  int64_t n = 0, k = 0, group = 0;
  std::vector<std::string> fields;
};

// layout_spec writes json.dumps(..., sort_keys=True) of plain values (strings, integers, lists of them): a few
// searches read it. Parsed once per distinct string (one per projection shape), then looked up.
int64_t int_after(const std::string& s, const std::string& key, int64_t fallback) {
  const auto at = s.find(key);
  return at == std::string::npos ? fallback : std::strtoll(s.c_str() + at + key.size(), nullptr, 10);
}

Spec parse_spec(const std::string& s) {
  Spec out;
  static const std::unordered_map<std::string, Kind> kinds = {
      {"semi24", Kind::kSemi24}, {"int4", Kind::kInt4}, {"int4_semi24", Kind::kInt4Semi24},
      {"mxfp4", Kind::kMXFP4}, {"int8", Kind::kInt8}};
  const std::string kind_key = "\"kind\": \"";
  const auto kat = s.find(kind_key);
  if (kat == std::string::npos) return out;
  const auto kend = s.find('"', kat + kind_key.size());
  const auto it = kinds.find(s.substr(kat + kind_key.size(), kend - kat - kind_key.size()));
  if (it == kinds.end()) return out;
  const std::string shape_key = "\"shape\": [";
  const auto sat = s.find(shape_key);
  if (sat == std::string::npos) return out;
  char* end = nullptr;
  out.n = std::strtoll(s.c_str() + sat + shape_key.size(), &end, 10);
  out.k = std::strtoll(end + 1, nullptr, 10);  // skips the comma
  out.group = int_after(s, "\"group_size\": ", 0);
  const std::string fields_key = "\"fields\": [";
  const auto fat = s.find(fields_key);
  if (fat == std::string::npos) return out;
  const auto fend = s.find(']', fat);
  for (auto q = s.find('"', fat + fields_key.size()); q != std::string::npos && q < fend;) {
    const auto q2 = s.find('"', q + 1);
    out.fields.push_back(s.substr(q + 1, q2 - q - 1));
    q = s.find('"', q2 + 1);
  }
  // what layout_spec would have written for these values; anything else (an attribute this file does not
  // know, keys nested differently) is not parsed here but handed to Python, which reads JSON properly
  const bool grouped = it->second == Kind::kInt4 || it->second == Kind::kInt4Semi24;
  std::string canonical = "{\"attrs\": {";
  if (grouped) canonical += "\"group_size\": " + std::to_string(out.group);
  canonical += "}, \"fields\": [";
  for (size_t i = 0; i < out.fields.size(); ++i) canonical += (i ? ", \"" : "\"") + out.fields[i] + "\"";
  canonical += "], \"kind\": \"" + it->first + "\", \"shape\": [" + std::to_string(out.n) + ", " +
               std::to_string(out.k) + "]}";
  if (canonical != s) return Spec{};
  out.kind = static_cast<int64_t>(it->second);
  return out;
}

const Spec& spec_of(c10::string_view text) {
  static std::mutex mu;
  static std::unordered_map<std::string, Spec> cache;
  std::lock_guard<std::mutex> lock(mu);
  std::string key(text.data(), text.size());
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, parse_spec(key)).first;
  return it->second;
}

bool triton_interpreter_on() {
  const char* v = std::getenv("TRITON_INTERPRET");
  return v != nullptr && std::string(v) == "1";
}

torch::Tensor packed_linear_python(const torch::Tensor& x, at::TensorList tensors,
                                   const c10::optional<torch::Tensor>& bias, c10::string_view spec,
                                   c10::string_view backend) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("sparsekit::packed_linear_py", "")
                             .typed<torch::Tensor(const torch::Tensor&, at::TensorList, const c10::optional<torch::Tensor>&,
                                                  c10::string_view, c10::string_view)>();
  return op.call(x, tensors, bias, spec, backend);
}

torch::Tensor packed_linear_cpu(const torch::Tensor& x, at::TensorList tensors, const c10::optional<torch::Tensor>& bias,
                                c10::string_view spec, c10::string_view backend) {
  const Spec& s = spec_of(spec);
  const bool a8 = backend == "cpu_a8";
  Packed shape;  // what a8_fits reads: the kind, K and the group size
  shape.kind = static_cast<Kind>(s.kind);
  shape.k = s.k;
  shape.group = s.group;
  const bool mine = backend == "cpu" || (backend == "auto" && !triton_interpreter_on()) ||
                    (a8 && s.kind >= 0 && sparsekit::cpu::a8_fits(shape));
  const bool dtype_ok = x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16;
  // inputs that do not fit are Python's to refuse, with the messages (and ValueError) every backend gives
  const bool fits = x.dim() >= 1 && x.size(-1) == s.k &&
                    (!bias.has_value() || (bias->dim() == 1 && bias->size(0) == s.n && bias->device().is_cpu()));
  if (!mine || s.kind < 0 || !dtype_ok || !fits || s.fields.size() != tensors.size()) {
    return packed_linear_python(x, tensors, bias, spec, backend);
  }
  c10::optional<torch::Tensor> values, codes, meta, scales, zeros;
  for (size_t i = 0; i < s.fields.size(); ++i) {
    const std::string& f = s.fields[i];
    if (f == "values") values = tensors[i];
    else if (f == "codes") codes = tensors[i];
    else if (f == "meta") meta = tensors[i];
    else if (f == "scales") scales = tensors[i];
    else if (f == "zeros") zeros = tensors[i];
  }
  return linear(x, s.kind, s.n, s.k, values, codes, meta, scales, zeros, s.group, bias, "auto", a8 ? "int8" : "float");
}

// y = x W^T (+ bias) for a dense W [N, K] (gemv_dense.cpp), any number of tokens (the op below sends it up to
// kDecodeRows): float32 x and W, or bfloat16 x and W (summed in fp32 from their exact fp32 values, bias added, then
// rounded to bf16 once). `path`: 'auto' (AVX2 + FMA where the CPU has it, else scalar), 'avx2' or 'scalar' (tests
// pin each).
torch::Tensor dense_linear(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
                           const std::string& path) {
  const char* op = "dense_linear[cpu]";
  TORCH_CHECK(path == "auto" || path == "avx2" || path == "scalar", op, ": path must be 'auto', 'avx2' or 'scalar', got '",
              path, "'");
  TORCH_CHECK(path != "avx2" || (cpu_has_avx2() && sparsekit::cpu::dense_avx2_compiled()), op,
              ": the AVX2 path is unavailable: ", avx2_missing());
  const auto wt = weight.scalar_type();
  const auto name = [](c10::ScalarType t) { return std::string(c10::getDtypeNames(t).first); };  // torch's names
  TORCH_CHECK(weight.device().is_cpu() && weight.dim() == 2 && (wt == torch::kFloat32 || wt == torch::kBFloat16) &&
                  weight.is_contiguous(),
              op, ": the weight must be a contiguous float32 or bfloat16 [N, K] CPU tensor, got ", name(wt), " ",
              weight.sizes(), weight.is_contiguous() ? "" : " (not contiguous)");
  const int64_t n = weight.size(0), k = weight.size(1);
  TORCH_CHECK(n >= 1 && k >= 1, op, ": empty weight ", n, " x ", k);
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == wt, op, ": the input must be a ", name(wt),
              " CPU tensor (the weight's dtype), got ", name(x.scalar_type()), " on ", x.device());
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == k, op, ": input has ", x.dim() ? x.size(-1) : 0,
              " features but the weight has in_features=", k);
  c10::optional<torch::Tensor> b;
  if (bias.has_value()) {
    TORCH_CHECK(bias->device().is_cpu() && bias->dim() == 1 && bias->size(0) == n, op, ": bias must be a CPU [", n,
                "] tensor");
    b = bias->to(torch::kFloat32).contiguous();
  }
  // bf16 activations widened once a call (exact), so the kernel's inner loop widens only the weights
  auto x2 = x.reshape({-1, k}).to(torch::kFloat32).contiguous();
  const int64_t m = x2.size(0);
  auto out = torch::empty({m, n}, x2.options());
  const bool simd = path == "avx2" || (path == "auto" && cpu_has_avx2() && sparsekit::cpu::dense_avx2_compiled());
  const float* xp = x2.data_ptr<float>();
  const float* bp = b.has_value() ? b->data_ptr<float>() : nullptr;
  float* op_ = out.data_ptr<float>();
  // one contiguous range of rows per thread (as the packed decode kernels), split at multiples of 4 rows: rows go
  // 4 at a time, so each row is summed the same way (the same bits) at any thread count
  const int64_t quads = (n + 3) / 4;
  const int64_t grain = std::max<int64_t>(4, (quads + at::get_num_threads() - 1) / at::get_num_threads());
  auto run = [&](const auto& d) {
    if (m == 0) return;
    at::parallel_for(0, quads, grain, [&](int64_t q0, int64_t q1) {
      const int64_t n0 = 4 * q0, n1 = std::min(n, 4 * q1);
      if (simd) sparsekit::cpu::dense_rows_avx2(d, xp, m, op_, bp, n0, n1);
      else sparsekit::cpu::dense_rows_scalar(d, xp, m, op_, bp, n0, n1);
    });
  };
  if (wt == torch::kFloat32) {
    sparsekit::cpu::Dense d;
    d.w = weight.data_ptr<float>();
    d.n = n;
    d.k = k;
    run(d);
  } else {
    sparsekit::cpu::DenseBf16 d;
    d.w = reinterpret_cast<const uint16_t*>(weight.data_ptr());
    d.n = n;
    d.k = k;
    run(d);
  }
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  return out.to(wt).view(sizes);
}

// A bf16 weight times bf16 activations of more than kDecodeRows tokens on a CPU without AVX512_BF16, in fp32: torch's
// bf16 matmul has no bf16 instruction to run on there and is several times slower than its fp32 one (Zen 3,
// SmolLM2-135M's 128-token prefill in bf16: 1.8 s against 0.3 s in fp32). The weight is widened a prefill tile of
// rows at a time (`prefill_tile_rows`, as the packed prefill), the activations once; exact widenings, one fp32 sum,
// one rounding.
torch::Tensor dense_prefill_fp32(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias) {
  const int64_t n = weight.size(0), k = weight.size(1);
  const auto x2 = x.reshape({-1, k}).to(torch::kFloat32).contiguous();
  auto out = torch::empty({x2.size(0), n}, x2.options());
  const int64_t tile = prefill_tile_rows(n, k);
  for (int64_t n0 = 0; n0 < n; n0 += tile) {
    const int64_t rows = std::min(tile, n - n0);
    out.narrow(1, n0, rows).copy_(at::mm(x2, weight.narrow(0, n0, rows).to(torch::kFloat32).t()));
  }
  if (bias.has_value()) out.add_(bias->to(torch::kFloat32));
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  return out.to(weight.scalar_type()).view(sizes);
}

// The CPU kernel of sparsekit::dense_linear (sparsekit/ops/dense_linear.py): decode calls (up to kDecodeRows tokens)
// of a contiguous float32 or bfloat16 weight, with input (and bias) of its dtype, on a CPU with AVX2 run
// gemv_dense.cpp; longer bf16 calls on a CPU without AVX512_BF16 multiply in fp32 (dense_prefill_fp32); everything
// else is at::linear (BLAS: faster than one row at a time once tokens share a weight tile, and what the scalar path
// would only slow down). Shape and dtype errors are at::linear's own.
torch::Tensor dense_linear_cpu(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias) {
  const auto wt = weight.scalar_type();
  const bool fits = (wt == torch::kFloat32 || wt == torch::kBFloat16) && x.scalar_type() == wt && weight.dim() == 2 &&
                    weight.is_contiguous() && x.dim() >= 1 && x.size(-1) == weight.size(1) && weight.numel() > 0 &&
                    (!bias.has_value() ||
                     (bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == wt));
  if (!fits) return at::linear(x, weight, bias);
  if (x.numel() / weight.size(1) > kDecodeRows) {
    return wt == torch::kBFloat16 && !cpu_has_bf16_dot() ? dense_prefill_fp32(x, weight, bias) : at::linear(x, weight, bias);
  }
  if (!cpu_has_avx2() || !sparsekit::cpu::dense_avx2_compiled()) return at::linear(x, weight, bias);
  return dense_linear(x, weight, bias, "auto");
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsekit, CPU, m) {
  m.impl("packed_linear", &packed_linear_cpu);
  m.impl("dense_linear", &dense_linear_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekit CPU kernels of the packed layouts (csrc/cpu)";
  m.def("version", [] { return std::string(SPARSEKIT_STR(SPARSEKIT_VERSION)); });
  m.def("has_avx512", &cpu_has_avx512, "whether the AVX-512 path can run on this CPU");
  m.def("has_avx2", &cpu_has_avx2, "whether the AVX2 (+ FMA, F16C) path can run on this CPU");
  m.def("has_a8", &cpu_has_a8, "whether the int8-activation (a8) AVX-512 VNNI kernels can run on this CPU");
  m.def("has_bf16_dot", &cpu_has_bf16_dot,
        "whether the AVX512_BF16 decode kernels run on this CPU (2:4 bf16 x bf16 activations; int4, MXFP4 and "
        "int4 + 2:4 as bf16 dot products)");
  m.def("prefetch", [] {
    const PrefetchPlan plan = prefetch_plan();
    return std::string(plan.l2 ? "l2:" : "l1:") + std::to_string(plan.distance);
  }, "where the decode loops prefetch the weight streams: 'l1:BYTES' or 'l2:BYTES' ahead");
  m.def("a8_kernels", [] { return std::string(cpu_has_a8() ? "vnni" : cpu_has_avx2() ? "avx2" : "none"); },
        "which int8-activation (a8) decode kernels path='auto' runs here: 'vnni', 'avx2' or 'none' (the exact "
        "kernels on the quantized activations)");
  m.def("a8_tiles_bytes", [] { return tiles_cache().bytes(); },
        "bytes held by the reordered copies of int4 + 2:4 weights that the VNNI a8 kernel reads (built on a "
        "weight's first a8 call; the copies of weights that are gone are freed first)");
  m.def("a8_tiles_clear", [] { tiles_cache().clear(); },
        "drop every reordered int4 + 2:4 copy (each is rebuilt at its weight's next a8 call): after writing a "
        "weight in place by a path that torch's version counter does not see (.data, a NumPy view)");
  m.def("fake_quant_acts", [](const torch::Tensor& x) {
    TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(),
                "fake_quant_acts: x must be a contiguous float32 CPU [M, K] tensor");
    auto out = torch::empty_like(x);
    sparsekit::cpu::fake_quant_acts(x.data_ptr<float>(), x.size(0), x.size(1), out.data_ptr<float>());
    return out;
  }, "x replaced by its int8 blocks of 32 (d * q): what the a8 kernels multiply", py::arg("x"));
  m.def("dense_linear", &dense_linear, "y = x W^T (+ bias) for a dense float32 or bfloat16 W [N, K] (the decode kernel of "
        "sparsekit::dense_linear; path: 'auto' | 'avx2' | 'scalar')", py::arg("x"), py::arg("weight"),
        py::arg("bias") = py::none(), py::arg("path") = "auto");
  m.def("linear", &linear, "y = x W^T (+ bias) for a packed W (kind: 0 semi24, 1 int4, 2 int4_semi24, 3 mxfp4, 4 int8)",
        py::arg("x"), py::arg("kind"), py::arg("n"), py::arg("k"), py::arg("values") = py::none(),
        py::arg("codes") = py::none(), py::arg("meta") = py::none(), py::arg("scales") = py::none(),
        py::arg("zeros") = py::none(), py::arg("group") = 0, py::arg("bias") = py::none(), py::arg("path") = "auto",
        py::arg("acts") = "float");
}
