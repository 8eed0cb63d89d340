// niah flash attention, Metal helpers (header of mx.fast.metal_kernel).
//
// Mirrors flash_common.cuh. Apple GPUs have 8x8 simdgroup matrices; a lane holds two adjacent
// elements of one row: (frag_row(lane), frag_col(lane) + {0, 1}) — rows from lane bits 4, 2, 1,
// columns from bits 3, 0 (the layout MLX's steel kernels rely on). The four lanes of a row
// differ in bits 0 and 3, so row reductions shuffle with xor 1 and xor 8.
//
// NIAH_UNROLL asks for full unrolling of loops with compile-time bounds (as MLX's steel kernels
// do), so fragment arrays stay in registers.

#include <metal_stdlib>
#include <metal_simdgroup>
#include <metal_simdgroup_matrix>

#define NIAH_UNROLL _Pragma("clang loop unroll(full)")

namespace niah_fa {

constant constexpr float LOG2E = 1.4426950408889634f;
constant constexpr float LN2 = 0.6931471805599453f;

typedef metal::simdgroup_matrix<float, 8, 8> frag;

inline short frag_row(ushort lane) {
  return short(((lane >> 2) & 4) + ((lane >> 1) & 3));
}

inline short frag_col(ushort lane) {
  return short(((lane >> 1) & 4) + ((lane & 1) << 1));
}

// Two adjacent output elements, converted explicitly (bfloat takes no implicit conversion).
template <typename P>
inline void store2(device P* p, float x, float y) {
  p[0] = static_cast<P>(x);
  p[1] = static_cast<P>(y);
}

// Max and sum over the four lanes that hold one fragment row (not Metal's quad-group built-ins).
inline float frag_row_max(float x) {
  x = metal::max(x, metal::simd_shuffle_xor(x, ushort(1)));
  return metal::max(x, metal::simd_shuffle_xor(x, ushort(8)));
}

inline float frag_row_sum(float x) {
  x += metal::simd_shuffle_xor(x, ushort(1));
  return x + metal::simd_shuffle_xor(x, ushort(8));
}

}  // namespace niah_fa
