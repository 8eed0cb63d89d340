// The Metal Shading Language that niah/kernels/*.metal uses, implemented in C++ so those
// sources compile with g++/clang++ and RUN on a CPU (tests/msl_exec.py drives it).
//
// Execution model. A threadgroup is a set of lanes; each lane is a fiber (ucontext) with its own
// stack running the kernel body. Lanes switch only at synchronisation points:
//   - threadgroup_barrier: every live lane of the threadgroup must arrive;
//   - simd operations (simd_shuffle_xor, simd_sum/max, simdgroup_multiply_accumulate,
//     simdgroup_barrier): every live lane of the 32-lane simdgroup must arrive, then each lane
//     reads the values all lanes posted (an all-gather), as the hardware's lanes do in lockstep.
// The scheduler always resumes the lowest-numbered runnable lane, so simdgroup 0 runs ahead until
// it reaches a threadgroup barrier before simdgroup 1 starts: a missing threadgroup barrier lets
// one simdgroup read threadgroup memory another has not written yet (or overwrite what another
// still reads) on EVERY run, deterministically, not by the luck of OS scheduling. Lanes that wait
// on different barriers forever are reported as a deadlock.
//
// Threadgroup memory: `threadgroup` is an address-space qualifier that means nothing to C++
// (like `device` and `constant`), so pointer types such as `threadgroup uint4*` compile; the
// array DECLARATIONS at function scope (`[alignas(n)] threadgroup T name[...]`) are rewritten into
// statics before compiling (msl_exec.threadgroup_statics). Threadgroups run one after another,
// so that storage is shared by the lanes of one threadgroup (and, like real threadgroup memory,
// holds garbage from the previous one).
//
// simdgroup_matrix<T, 8, 8>: each lane holds 2 elements, (frag_row(lane), frag_col(lane) + {0,1})
// with row = bit4*4 + bits(2,1), col = bit3*4 + bit0*2: the layout of MLX's
// steel BaseMMAFrag::get_coord. multiply_accumulate gathers the 32 lanes' elements, forms the
// 8x8 matrices, and gives each lane its own two results (float accumulation).
//
// half is _Float16; bfloat is a 16-bit struct with round-to-nearest-even from float through an
// explicit constructor only (Metal takes no implicit float -> bfloat conversion).
//
// vec<T, N> (half4, float4, uint4, ...): N elements with MSL's alignment (N * sizeof(T); 3 counts
// as 4), element access with [], construction from one scalar (broadcast) or N scalars, explicit
// element-wise conversion between element types. Copying or converting a vector from, or storing
// one to, an address not aligned to it (a load through a `const device uint4*` cast of a
// misaligned pointer, undefined in MSL) is a FAULT: the launch reports it as an error instead
// of reading on as a CPU would. No swizzles (.x, .xy): the kernels index.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#define device
#define constant
#define thread
#define threadgroup
#define METAL_FUNC inline

typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned char uchar;
typedef unsigned long ulong;  // 64-bit, as MSL's (LP64)
struct uint3 {
  uint x, y, z;
};
struct short2 {
  short x, y;
};
typedef _Float16 half;
typedef half float16_t;

struct bfloat {
  uint16_t bits;
  bfloat() = default;
  explicit bfloat(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = uint16_t((u >> 16) | 0x40);  // quiet NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
      bits = uint16_t(u >> 16);
    }
  }
  operator float() const {
    uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};
typedef bfloat bfloat16_t;

namespace mslx {

enum class State { ready, wait_simd, wait_tg, done };

struct Lane {
  ucontext_t ctx;
  State st = State::ready;
  unsigned gen = 0;  // simd all-gathers done (selects the double buffer)
};

constexpr int kSlot = 64;  // bytes a lane may post per simd exchange

struct Group {
  int n = 0;
  std::vector<Lane> lanes;
  std::vector<std::vector<char>> stacks;
  std::vector<unsigned char> xch;  // [simdgroup][2][32][kSlot]
  ucontext_t main;
  int cur = -1;
  std::function<void(int)> body;
  std::string error;
  std::string fault;  // first undefined-behaviour report of a lane (see fault())
};

inline Group*& G() {
  static Group* g = nullptr;
  return g;
}

// Record what MSL leaves undefined (e.g. a misaligned vector access); the launch fails with it.
inline void fault(const std::string& what) {
  if (G() && G()->fault.empty()) G()->fault = "lane " + std::to_string(G()->cur) + ": " + what;
}

inline void check_aligned(const void* p, size_t align, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % align != 0)
    fault(std::string(what) + " an address not aligned to " + std::to_string(align) + " bytes");
}

inline void enter() {
  Group& g = *G();
  g.body(g.cur);
  g.lanes[g.cur].st = State::done;
  swapcontext(&g.lanes[g.cur].ctx, &g.main);
}

inline void yield() {
  Group& g = *G();
  swapcontext(&g.lanes[g.cur].ctx, &g.main);
}

inline void simd_sync() {
  if (!G()) return;  // outside an executor (type-check builds)
  G()->lanes[G()->cur].st = State::wait_simd;
  yield();
}

inline void tg_sync() {
  if (!G()) return;
  G()->lanes[G()->cur].st = State::wait_tg;
  yield();
}

// Release the lanes whose barrier every live lane of its scope reached.
inline void release(Group& g) {
  int live = 0, at_tg = 0;
  for (auto& l : g.lanes) {
    live += l.st != State::done;
    at_tg += l.st == State::wait_tg;
  }
  if (at_tg && at_tg == live) {
    for (auto& l : g.lanes)
      if (l.st == State::wait_tg) l.st = State::ready;
  }
  for (int s = 0; s * 32 < g.n; ++s) {
    int hi = std::min(g.n, s * 32 + 32), lv = 0, at = 0;
    for (int i = s * 32; i < hi; ++i) {
      lv += g.lanes[i].st != State::done;
      at += g.lanes[i].st == State::wait_simd;
    }
    if (at && at == lv)
      for (int i = s * 32; i < hi; ++i)
        if (g.lanes[i].st == State::wait_simd) g.lanes[i].st = State::ready;
  }
}

// Run one threadgroup of n lanes; returns "" or an error.
inline std::string run_group(int n, std::function<void(int)> body) {
  static thread_local std::vector<std::vector<char>> stacks;
  Group g;
  g.n = n;
  g.lanes.resize(n);
  g.xch.assign(size_t((n + 31) / 32) * 2 * 32 * kSlot, 0xff);
  g.body = std::move(body);
  if (int(stacks.size()) < n) stacks.resize(n);
  for (int i = 0; i < n; ++i) {
    if (stacks[i].empty()) stacks[i].resize(256 * 1024);
    getcontext(&g.lanes[i].ctx);
    g.lanes[i].ctx.uc_stack.ss_sp = stacks[i].data();
    g.lanes[i].ctx.uc_stack.ss_size = stacks[i].size();
    g.lanes[i].ctx.uc_link = nullptr;
    makecontext(&g.lanes[i].ctx, enter, 0);
  }
  G() = &g;
  for (;;) {
    int next = -1;
    for (int i = 0; i < n; ++i)
      if (g.lanes[i].st == State::ready) {
        next = i;
        break;
      }
    if (next < 0) {
      bool all_done = true;
      for (auto& l : g.lanes) all_done &= l.st == State::done;
      if (all_done) break;
      g.error = "deadlock: lanes wait on barriers that not every live lane reaches";
      break;
    }
    g.cur = next;
    swapcontext(&g.main, &g.lanes[next].ctx);
    release(g);
  }
  G() = nullptr;
  return g.error.empty() ? g.fault : g.error;
}

// Every live lane of this simdgroup posts `mine`; each gets all 32 values (dead lanes: garbage).
template <typename T>
inline void allgather(const T& mine, T* all) {
  static_assert(sizeof(T) <= kSlot, "simd exchange payload too large");
  Group* gp = G();
  if (!gp) {
    for (int j = 0; j < 32; ++j) all[j] = mine;
    return;
  }
  Group& g = *gp;
  int sg = g.cur / 32, li = g.cur % 32;
  unsigned buf = g.lanes[g.cur].gen & 1u;
  unsigned char* base = g.xch.data() + size_t(sg * 2 + buf) * 32 * kSlot;
  std::memcpy(base + li * kSlot, &mine, sizeof(T));
  simd_sync();
  for (int j = 0; j < 32; ++j) std::memcpy(&all[j], base + j * kSlot, sizeof(T));
  g.lanes[g.cur].gen++;
}

inline int lane_id() { return G() ? G()->cur % 32 : 0; }

struct Attrs {
  uint3 thread_position_in_grid, threadgroup_position_in_grid, threads_per_threadgroup,
      threadgroups_per_grid, thread_position_in_threadgroup, threads_per_grid;
  uint thread_index_in_threadgroup, simdgroup_index_in_threadgroup, thread_index_in_simdgroup,
      simdgroups_per_threadgroup, threads_per_simdgroup;
};

// dispatch_threads(grid, min(threadgroup, grid)): non-uniform edge threadgroups, as MLX.
template <typename F>
inline std::string launch(const unsigned* grid, const unsigned* tg_in, F&& kernel) {
  unsigned tg[3], ng[3];
  for (int d = 0; d < 3; ++d) {
    tg[d] = std::min(tg_in[d], grid[d]);
    if (tg[d] == 0) return "";
    ng[d] = (grid[d] + tg[d] - 1) / tg[d];
  }
  for (unsigned gz = 0; gz < ng[2]; ++gz)
    for (unsigned gy = 0; gy < ng[1]; ++gy)
      for (unsigned gx = 0; gx < ng[0]; ++gx) {
        unsigned dims[3], pos[3] = {gx, gy, gz};
        for (int d = 0; d < 3; ++d) dims[d] = std::min(tg[d], grid[d] - pos[d] * tg[d]);
        int n = int(dims[0] * dims[1] * dims[2]);
        std::string err = run_group(n, [&](int i) {
          Attrs a;
          uint x = i % dims[0], y = (i / dims[0]) % dims[1], z = i / (dims[0] * dims[1]);
          a.thread_position_in_threadgroup = {x, y, z};
          a.threadgroup_position_in_grid = {gx, gy, gz};
          a.thread_position_in_grid = {gx * tg[0] + x, gy * tg[1] + y, gz * tg[2] + z};
          a.threads_per_threadgroup = {dims[0], dims[1], dims[2]};
          a.threadgroups_per_grid = {ng[0], ng[1], ng[2]};
          a.threads_per_grid = {grid[0], grid[1], grid[2]};
          a.thread_index_in_threadgroup = uint(i);
          a.simdgroup_index_in_threadgroup = uint(i / 32);
          a.thread_index_in_simdgroup = uint(i % 32);
          a.simdgroups_per_threadgroup = uint((n + 31) / 32);
          a.threads_per_simdgroup = 32;
          kernel(a);
        });
        if (!err.empty()) return err;
      }
  return "";
}

}  // namespace mslx

namespace metal {
enum class mem_flags { mem_none, mem_device, mem_threadgroup, mem_texture };
inline void threadgroup_barrier(mem_flags) { mslx::tg_sync(); }
inline void simdgroup_barrier(mem_flags) { mslx::simd_sync(); }

template <typename To, typename From>
To as_type(From x) {
  static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
  To t;
  std::memcpy(&t, &x, sizeof(t));
  return t;
}

template <typename T, int N>
struct alignas(sizeof(T) * (N == 3 ? 4 : N)) vec {
  static_assert(N >= 2 && N <= 4, "MSL vectors have 2, 3 or 4 elements");
  T e[N];
  vec() = default;
  explicit vec(T x) {  // MSL: T4(x) broadcasts
    for (int i = 0; i < N; ++i) e[i] = x;
  }
  template <typename... A, typename = std::enable_if_t<sizeof...(A) == N && N >= 2>>
  vec(A... xs) : e{T(xs)...} {}
  template <typename U>
  explicit vec(const vec<U, N>& o) {  // MSL: float4(half4) converts element-wise
    mslx::check_aligned(&o, alignof(vec<U, N>), "vector load from");
    for (int i = 0; i < N; ++i) e[i] = static_cast<T>(o[i]);
  }
  vec(const vec& o) {
    mslx::check_aligned(&o, alignof(vec), "vector load from");
    std::memcpy(e, o.e, sizeof(e));  // bytes: a load through a cast pointer aliases anything
  }
  vec& operator=(const vec& o) {
    mslx::check_aligned(this, alignof(vec), "vector store to");
    mslx::check_aligned(&o, alignof(vec), "vector load from");
    std::memcpy(e, o.e, sizeof(e));
    return *this;
  }
  T& operator[](int i) { return e[i]; }
  const T& operator[](int i) const { return e[i]; }
  bool operator==(const vec& o) const {
    for (int i = 0; i < N; ++i)
      if (!(e[i] == o.e[i])) return false;
    return true;
  }
};
typedef vec<half, 2> half2;
typedef vec<half, 4> half4;
typedef vec<bfloat, 2> bfloat2;
typedef vec<bfloat, 4> bfloat4;
typedef vec<float, 2> float2;
typedef vec<float, 4> float4;
typedef vec<uint, 2> uint2;
typedef vec<uint, 4> uint4;
typedef vec<ushort, 4> ushort4;

template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "only 8x8 simdgroup matrices");
  vec<T, 2> el;
  vec<T, 2>& thread_elements() { return el; }
  const vec<T, 2>& thread_elements() const { return el; }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <typename T, int Cols, int Rows>
simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T v) {
  simdgroup_matrix<T, Cols, Rows> m;
  m.el[0] = v;
  m.el[1] = v;
  return m;
}

inline int frag_row_of(int lane) { return ((lane >> 2) & 4) + ((lane >> 1) & 3); }
inline int frag_col_of(int lane) { return ((lane >> 1) & 4) + ((lane & 1) << 1); }

template <typename T>
void simdgroup_multiply_accumulate(simdgroup_matrix<T, 8, 8>& d, const simdgroup_matrix<T, 8, 8>& a,
                                   const simdgroup_matrix<T, 8, 8>& b,
                                   const simdgroup_matrix<T, 8, 8>& c) {
  struct P {
    T a[2], b[2], c[2];
  } mine{{a.el[0], a.el[1]}, {b.el[0], b.el[1]}, {c.el[0], c.el[1]}}, all[32];
  mslx::allgather(mine, all);
  float A[8][8], B[8][8], C[8][8];
  for (int j = 0; j < 32; ++j) {
    int r = frag_row_of(j), cc = frag_col_of(j);
    for (int e = 0; e < 2; ++e) {
      A[r][cc + e] = float(all[j].a[e]);
      B[r][cc + e] = float(all[j].b[e]);
      C[r][cc + e] = float(all[j].c[e]);
    }
  }
  int lane = mslx::lane_id(), r = frag_row_of(lane), cc = frag_col_of(lane);
  for (int e = 0; e < 2; ++e) {
    float acc = C[r][cc + e];
    for (int k = 0; k < 8; ++k) acc = std::fma(A[r][k], B[k][cc + e], acc);
    d.el[e] = T(acc);
  }
}

template <typename T>
T simd_shuffle_xor(T x, ushort mask) {
  T all[32];
  mslx::allgather(x, all);
  return all[(mslx::lane_id() ^ mask) & 31];
}

template <typename T>
T simd_shuffle(T x, ushort lane) {
  T all[32];
  mslx::allgather(x, all);
  return all[lane & 31];
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
inline float abs(float x) { return std::fabs(x); }
inline bool isinf(float x) { return std::isinf(x); }
inline bool isnan(float x) { return std::isnan(x); }
}  // namespace metal
using namespace metal;
