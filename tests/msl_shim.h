// Stand-ins for the Metal Shading Language names used by niah/kernels/*.metal, so that a C++
// compiler can type-check those sources with -fsyntax-only on machines without Metal. This is
// not a Metal implementation: bodies are empty or trivial; only names, types and arity matter.
#pragma once
#include <cmath>
#include <cstdint>

#define device
#define constant
#define threadgroup
#define thread

typedef unsigned short ushort;
typedef unsigned int uint;
struct uint3 {
  uint x, y, z;
};
typedef _Float16 half;
struct bfloat {
  float v;
  bfloat() = default;
  explicit bfloat(float x) : v(x) {}  // explicit, as strict as Metal is about bfloat
  operator float() const { return v; }
};
typedef bfloat bfloat16_t;

namespace metal {
enum class mem_flags { mem_none, mem_device, mem_threadgroup };
inline void threadgroup_barrier(mem_flags) {}
inline void simdgroup_barrier(mem_flags) {}
template <typename To, typename From>
To as_type(From x) {
  static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
  To t;
  __builtin_memcpy(&t, &x, sizeof(t));
  return t;
}
template <typename T, int N>
struct vec {
  T e[N];
  T& operator[](int i) { return e[i]; }
};
template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  vec<T, 2> el;
  vec<T, 2>& thread_elements() { return el; }
};
template <typename T, int Cols, int Rows>
simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T) {
  return {};
}
template <typename T, int C, int R>
void simdgroup_multiply_accumulate(simdgroup_matrix<T, C, R>&, const simdgroup_matrix<T, C, R>&,
                                   const simdgroup_matrix<T, C, R>&,
                                   const simdgroup_matrix<T, C, R>&) {}
template <typename T>
T simd_shuffle_xor(T x, ushort) {
  return x;
}
template <typename T>
T max(T a, T b) {
  return a > b ? a : b;
}
template <typename T>
T min(T a, T b) {
  return a < b ? a : b;
}
inline float exp2(float x) { return std::exp2(x); }
inline float exp(float x) { return std::exp(x); }
inline float log2(float x) { return std::log2(x); }
inline float log(float x) { return std::log(x); }
inline float fma(float a, float b, float c) { return std::fma(a, b, c); }
}  // namespace metal
using namespace metal;
