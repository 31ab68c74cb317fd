// int4 + 2:4 reordered for the VNNI a8 kernel (`Int4Semi24Tiles` in packed_cpu.h says the order and why).
// Plain C++: the binding calls it whatever the CPU, before dispatching to the kernel.
#include <algorithm>

#include "packed_cpu.h"

namespace sparsekit {
namespace cpu {

void repack_int4_semi24_tiles(const Packed& p, uint8_t* stream, uint16_t* scales, uint8_t* zeros, int64_t tile0,
                              int64_t tile1) {
  constexpr int64_t R = Int4Semi24Tiles::kRows, B = Int4Semi24Tiles::kBlockBytes;
  const int64_t N = p.n, K = p.k, G = p.groups(), nb = K / kActBlock;
  // a padding row weighs 0: code 8 against zero point 8 (kept slots 0 and 1 of each group: any valid positions)
  constexpr uint8_t kPadCodes = 0x88, kPadMeta = 0x44;
  for (int64_t t = tile0; t < tile1; ++t) {
    uint8_t* tile = stream + t * nb * B;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = t * R + r;
      const bool real = n < N;
      const uint8_t* codes = real ? p.codes + n * (K / 4) : nullptr;  // 2 bytes (4 kept codes) per 8 inputs
      const uint8_t* meta = real ? p.meta + n * (K / 8) : nullptr;    // 1 byte per 8 inputs
      const int64_t q = r / 2, at = 8 * (q % 2) + 2 * (q / 2) + r % 2;
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* blk = tile + b * B;
        for (int64_t s = 0; s < 4; ++s) {
          const int64_t step = b * 4 + s;  // inputs 8 step .. 8 step + 7
          const uint8_t c0 = real ? codes[2 * step] : kPadCodes, c1 = real ? codes[2 * step + 1] : kPadCodes;
          const uint8_t slot[4] = {static_cast<uint8_t>(c0 & 15), static_cast<uint8_t>(c0 >> 4),
                                   static_cast<uint8_t>(c1 & 15), static_cast<uint8_t>(c1 >> 4)};
          uint8_t* pair = blk + 64 * (s / 2);
          const int shift = 4 * static_cast<int>(s % 2);
          for (int64_t j = 0; j < 4; ++j) {  // step 2h sets the byte, step 2h + 1 adds its high nibble
            uint8_t& byte = pair[4 * r + j];
            byte = shift ? static_cast<uint8_t>(byte | (slot[j] << 4)) : slot[j];
          }
          blk[128 + 16 * s + at] = real ? meta[step] : kPadMeta;
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        scales[(t * G + g) * R + r] = real ? p.scales[n * G + g] : 0;
        if (zeros) zeros[(t * G + g) * R + r] = real ? p.zeros[n * G + g] : 8;
      }
    }
  }
}

}  // namespace cpu
}  // namespace sparsekit
