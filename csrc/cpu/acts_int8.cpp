// Activations to int8 blocks for the a8 kernels (gemm_avx512_vnni.cpp, and the AVX2 ones of gemm_avx2.cpp):
// portable C++, run once per call.
//
// The quantization is llama.cpp's Q8_0 (blocks of 32, symmetric absmax) with round-half-to-even, so that
// torch.round reproduces it bit for bit in the tests' emulation. Arranged per layout and kernel so the kernels
// load whole vectors: the nibble layouts keep input 2i in the low nibble of byte i, so their activations are
// split into even and odd inputs (a code byte's two nibbles meet the same byte offset of each). The VNNI MXFP4,
// int4 + 2:4 and int8 kernels multiply signed weights, and vpdpbusd needs one unsigned operand, so their
// activations are stored biased by 128 (the kernels subtract 128 x sum w, which they get from the same
// instruction); so are the AVX2 int4 + 2:4 kernel's (vpmaddubsw's unsigned operand, against c - z). The AVX2
// MXFP4 and int8 kernels move the weights' sign onto q instead (vpsignb), and read q as it is. int4 + 2:4 and
// int8 weights read the activations in input order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {

void quantize_block32(const float* x, int64_t k, int8_t* q, float* d) {
  for (int64_t b = 0; b * kActBlock < k; ++b) {
    const int64_t k0 = b * kActBlock, k1 = std::min(k, k0 + kActBlock);
    float amax = 0.0f;
    for (int64_t i = k0; i < k1; ++i) amax = std::max(amax, std::fabs(x[i]));
    // 127 / amax, not 1 / d: the same two fp32 operations the emulation does (x * (127 / amax))
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    // round half to even as torch.round does: adding and subtracting 1.5 x 2^23 leaves the integer part
    // (exact for |v| < 2^22; here |v| <= 127), and unlike nearbyint it is not a libm call per element
    for (int64_t i = k0; i < k1; ++i) q[i] = static_cast<int8_t>((x[i] * inv + 12582912.0f) - 12582912.0f);
  }
}

void fake_quant_acts(const float* x, int64_t m, int64_t k, float* out) {
  std::vector<int8_t> q(static_cast<size_t>(k));
  std::vector<float> d(static_cast<size_t>((k + kActBlock - 1) / kActBlock));
  for (int64_t t = 0; t < m; ++t) {
    quantize_block32(x + t * k, k, q.data(), d.data());
    for (int64_t i = 0; i < k; ++i) out[t * k + i] = d[i / kActBlock] * static_cast<float>(q[i]);
  }
}

void quantize_acts(const Packed& p, const float* x, int64_t m, QActs& qa, A8Path path) {
  const int64_t K = p.k;
  qa.m = m;
  qa.k = K;
  qa.kpad = (K + 127) / 128 * 128 + 128;
  qa.blocks = qa.kpad / kActBlock;
  const int64_t kp = qa.kpad, nb = qa.blocks;
  qa.d.assign(m * nb, 0.0f);
  std::vector<int8_t> q(static_cast<size_t>(kp));
  // int4 codes (u8) x q (s8), the zero point folded out per group
  const bool int4_acts = p.kind == Kind::kInt4;
  const bool gathered = p.kind == Kind::kInt4Semi24;  // both paths' tiles gather from the step's 8 activations
  const bool int8_w = p.kind == Kind::kInt8;
  // the weights are signed and the activations the unsigned operand (vpdpbusd; AVX2's int4 + 2:4 vpmaddubsw);
  // the other AVX2 kernels take q as it is (int4's codes are the unsigned operand; MXFP4 and int8 move the
  // weights' sign onto q with vpsignb)
  const bool biased = (path == A8Path::kVnni && !int4_acts) || gathered;
  const uint8_t zero = biased ? 128 : 0;
  if (gathered || int8_w) {
    qa.natural.assign(m * kp, zero);
  } else {
    qa.even.assign(m * kp / 2, zero);
    qa.odd.assign(m * kp / 2, zero);
    qa.lanes.assign(m * kp / 8, 0.0f);
  }
  const int64_t G = p.groups();
  if (int4_acts) qa.gsum.assign(m * G, 0.0f);
  for (int64_t t = 0; t < m; ++t) {
    float* d = &qa.d[t * nb];
    quantize_block32(x + t * K, K, q.data(), d);
    if (gathered || int8_w) {
      uint8_t* nat = &qa.natural[t * kp];
      for (int64_t i = 0; i < K; ++i) nat[i] = static_cast<uint8_t>(q[i] + zero);
    }
    if (!gathered && !int8_w) {
      uint8_t* ev = &qa.even[t * kp / 2];
      uint8_t* od = &qa.odd[t * kp / 2];
      for (int64_t i = 0; i < K / 2; ++i) {
        ev[i] = static_cast<uint8_t>(q[2 * i] + (biased ? 128 : 0));
        od[i] = static_cast<uint8_t>(q[2 * i + 1] + (biased ? 128 : 0));
      }
      // lane j (bytes 4j..4j+3 of even / odd) covers inputs 8j..8j+7: block j / 4
      float* l = &qa.lanes[t * kp / 8];
      for (int64_t j = 0; j < kp / 8; ++j) l[j] = d[j / 4];
    }
    if (int4_acts) {
      for (int64_t g = 0; g < G; ++g) {
        float sum = 0.0f;
        for (int64_t i = g * p.group; i < std::min(K, (g + 1) * p.group); ++i)
          sum += d[i / kActBlock] * static_cast<float>(q[i]);
        qa.gsum[t * G + g] = sum;
      }
    }
  }
}

}  // namespace cpu
}  // namespace sparsekit
