// niah flash attention, Metal helpers (header of mx.fast.metal_kernel).
//
// Mirrors flash_common.cuh. Apple GPUs have 8x8 simdgroup matrices; a lane holds two adjacent
// elements of one row: (frag_row(lane), frag_col(lane) + {0, 1}) — rows from lane bits 4, 2, 1,
// columns from bits 3, 0 (the layout MLX's steel kernels rely on). The four lanes of a row
// differ in bits 0 and 3, so row reductions shuffle with xor 1 and xor 8.
//
// NIAH_UNROLL asks for full unrolling of loops with compile-time bounds (as MLX's steel kernels
// do), so fragment arrays stay in registers.
//
// NIAH_VECTOR_LOADS (0 or 1, defined by flash.py ahead of this header; 0 when absent) selects
// how global -> threadgroup copies go. At 1, in 16-byte chunks of VEC elements (one uint4 load
// and store, bits only), as flash_common.cuh's cp_async16, when vector_ok says the layout allows
// it, else element by element through the strides (CUDA's decision rule). At 0, element by
// element always, and nothing of the vector path is compiled: its pointer-alignment check
// (a device pointer cast to an integer) and the alignas(16) threadgroup tiles are constructs
// MLX's own kernels do not use, so flash.py builds each Metal variant at 1 first and rebuilds
// it at 0 when that build or its self-test fails.

#ifndef NIAH_VECTOR_LOADS
#define NIAH_VECTOR_LOADS 0
#endif

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

#if NIAH_VECTOR_LOADS
// Elements of a 16-byte chunk (T is 2 bytes: half or bfloat).
constant constexpr int VEC = 8;

// The 16 bytes at p, as bits (no conversion): one vector load; p must be 16-byte aligned.
template <typename T>
inline uint4 load16(const device T* p) {
  return *reinterpret_cast<const device uint4*>(p);
}

template <typename T>
inline void store16(threadgroup T* p, uint4 x) {
  *reinterpret_cast<threadgroup uint4*>(p) = x;
}

// Whether rows of a [B, H, L, D] input can be copied in 16-byte chunks: innermost stride 1, the
// other strides multiples of VEC elements, and the device pointer itself 16-byte aligned.
// The pointer must be checked here, on the GPU: mx.fast.metal_kernel binds an input view as its
// buffer plus the view's byte offset (setBuffer(buffer, array.offset()), element offset times
// the item size; mlx/backend/metal/custom_kernel.cpp and CommandEncoder::set_input_array), and
// it copies inputs only when ensure_row_contiguous is set and the view is not row-contiguous
// (flash_fwd.metal's kernel is built with it off, so transposed and sliced q/k/v arrive as views).
// Allocations start page- or heap-aligned, but a view such as x[..., 1:] starts 2 bytes into
// a 16-byte line: only T's alignment is guaranteed, and nothing on the host can see the offset
// (mx.array has no offset attribute). D % VEC == 0 is a static_assert where D is known (the
// body): the 8x8 blocks along D need it as much as the chunks do.
template <typename T>
inline bool vector_ok(const device T* p, const constant int64_t* st) {
  return st[3] == 1 && st[0] % VEC == 0 && st[1] % VEC == 0 && st[2] % VEC == 0 &&
         reinterpret_cast<ulong>(p) % 16 == 0;
}
#endif  // NIAH_VECTOR_LOADS

}  // namespace niah_fa
