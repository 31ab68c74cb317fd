// int4 + 2:4 reordered for the a8 kernels (`Int4Semi24Tiles` for VNNI, `Int4Semi24TilesAvx2` for AVX2: packed_cpu.h
// says each order and why). Plain C++: the binding calls it whatever the CPU, before dispatching to the kernel.
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

void repack_int4_semi24_tiles_avx2(const Packed& p, uint8_t* stream, uint16_t* scales, uint8_t* zeros,
                                   int64_t tile0, int64_t tile1) {
  constexpr int64_t R = Int4Semi24TilesAvx2::kRows, B = Int4Semi24TilesAvx2::kBlockBytes;
  const int64_t N = p.n, K = p.k, G = p.groups(), nb = K / kActBlock;
  // a padding row weighs 0: code 8 against zero point 8 (at position 0 of each group: any position reads q + 128
  // of a real input, and 0 x that adds nothing)
  constexpr uint8_t kPadCode = 8;
  for (int64_t t = tile0; t < tile1; ++t) {
    uint8_t* tile = stream + t * nb * B;
    std::fill(tile, tile + nb * B, uint8_t(0));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = t * R + r;
      const bool real = n < N;
      const uint8_t* codes = real ? p.codes + n * (K / 4) : nullptr;  // 2 bytes (4 kept codes) per 8 inputs
      const uint8_t* meta = real ? p.meta + n * (K / 8) : nullptr;    // 1 byte per 8 inputs: slot j in bits 2j, 2j + 1
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* blk = tile + b * B;
        for (int64_t s = 0; s < 4; ++s) {
          const int64_t step = b * 4 + s;  // inputs 8 step .. 8 step + 7
          for (int64_t j = 0; j < 4; ++j) {
            const int64_t i = 4 * r + j;  // the byte of row r, slot j in each 32-byte vector
            const uint8_t code = real ? static_cast<uint8_t>((codes[2 * step + j / 2] >> (4 * (j % 2))) & 15) : kPadCode;
            const uint8_t pos = real ? static_cast<uint8_t>((meta[step] >> (2 * j)) & 3) : 0;
            blk[32 * (s / 2) + i] |= static_cast<uint8_t>(code << (4 * (s % 2)));
            blk[64 + i] |= static_cast<uint8_t>(pos << (2 * s));
          }
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
