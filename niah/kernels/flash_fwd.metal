// niah flash attention forward, Metal body (mx.fast.metal_kernel; helpers in flash_common.metal).
//
// Mirrors flash_fwd.cu step for step: the same tiles (MW simdgroups x MT 16-row tiles, BC keys
// per step), GQA row packing (row r = query r / G of head kvh * G + r % G), key splits, causal
// shift, bool/additive masks, sinks, base-2 online softmax with the scale folded into interior
// tiles, and the same epilogue (SPLIT: float32 partial + lse for flash_combine.metal).
// Global -> threadgroup loads: with NIAH_VECTOR_LOADS at 1 they follow the same rule as CUDA's:
// per tensor, vector_ok (innermost stride 1, other strides multiples of VEC, 16-byte aligned
// pointer; K and V decided together) picks 16-byte chunks (CPR per row), else element-wise loads
// through the strides; at 0 only the element-wise loads exist (flash_common.metal says why).
// Differences forced by the hardware: a row tile is 8 rows (one 8x8 simdgroup-matrix block;
// CUDA's mma.sync needs 16), fragments are float and filled element by element from the T tiles
// in threadgroup memory (no ldmatrix), global loads are synchronous (one stage, no cp.async),
// and P stays float for P V.
//
// Template constants: T, D, MW, MT, BC, CAUSAL, MASK (0 none, 1 bool keep, 2 additive), SINKS,
// SPLIT. params (int32): [causal shift, scale (float bits), keys per split].

using namespace niah_fa;
constexpr int BR = MW * MT * 8;
constexpr int NTHREADS = 32 * MW;
constexpr int LDS = D + 8;
constexpr int RB = MT;  // 8-row blocks per simdgroup
constexpr int NKB = BC / 8;
constexpr int NDB = D / 8;
#if NIAH_VECTOR_LOADS
constexpr int CPR = D / VEC;  // 16-byte chunks per row
static_assert(D % VEC == 0, "D must be a multiple of 8: 8x8 blocks along D, 16-byte row chunks");
// 16-byte aligned tiles; with D % VEC == 0 every row (LDS elements) starts on a 16-byte boundary.
alignas(16) threadgroup T sQ[BR * LDS];
alignas(16) threadgroup T sK[BC * LDS];
alignas(16) threadgroup T sV[BC * LDS];
#else
threadgroup T sQ[BR * LDS];
threadgroup T sK[BC * LDS];
threadgroup T sV[BC * LDS];
#endif

const int tid = int(thread_index_in_threadgroup);
const ushort lane = ushort(thread_index_in_simdgroup);
const int warp = int(simdgroup_index_in_threadgroup);
const short fr = frag_row(lane);
const short fc = frag_col(lane);
const int Bn = q_shape[0];
const int Hq = q_shape[1];
const int qL = q_shape[2];
const int Hkv = k_shape[1];
const int kL = k_shape[2];
const int G = Hq / Hkv;
const int rows = G * qL;
const int row0 = int(threadgroup_position_in_grid.x) * BR;
const int b = int(threadgroup_position_in_grid.y) / Hkv;
const int kvh = int(threadgroup_position_in_grid.y) % Hkv;
const int split = int(threadgroup_position_in_grid.z);
const int shift = params[0];
const float scale_log2 = as_type<float>(params[1]) * LOG2E;
const int split_len = params[2];

const int last_row = metal::min(rows, row0 + BR) - 1;
const int q_lo = row0 / G;
const int q_hi = last_row / G;
const int kb = split * split_len;
int ke = metal::min(kL, kb + split_len);
if (CAUSAL) ke = metal::min(ke, q_hi + shift + 1);
const int ntiles = ke > kb ? (ke - kb + BC - 1) / BC : 0;
const int64_t kbase = int64_t(b) * k_strides[0] + int64_t(kvh) * k_strides[1];
const int64_t vbase = int64_t(b) * v_strides[0] + int64_t(kvh) * v_strides[1];

// Q tile -> threadgroup memory (rows past the end are zero).
#if NIAH_VECTOR_LOADS
const bool q_vec = vector_ok(q, q_strides);
const bool k_vec = vector_ok(k, k_strides);
const bool v_vec = vector_ok(v, v_strides);
if (q_vec) {
  for (int c = tid; c < BR * CPR; c += NTHREADS) {
    int r = c / CPR, cc = c % CPR, gr = row0 + r;
    uint4 x = uint4(0u);
    if (gr < rows) {
      int qi = gr / G, h = kvh * G + gr % G;
      x = load16(q + int64_t(b) * q_strides[0] + int64_t(h) * q_strides[1] +
                 int64_t(qi) * q_strides[2] + cc * VEC);
    }
    store16(sQ + r * LDS + cc * VEC, x);
  }
} else  // no braces: at 0 the loop below is the element-wise code, token for token
#endif
  for (int c = tid; c < BR * D; c += NTHREADS) {
    int r = c / D, d = c % D, gr = row0 + r;
    T x = T(0.0f);
    if (gr < rows) {
      int qi = gr / G, h = kvh * G + gr % G;
      x = q[int64_t(b) * q_strides[0] + int64_t(h) * q_strides[1] + int64_t(qi) * q_strides[2] +
            int64_t(d) * q_strides[3]];
    }
    sQ[r * LDS + d] = x;
  }

frag o[RB][NDB];
float m_run[RB];
float l_run[RB];
NIAH_UNROLL
for (int rb = 0; rb < RB; ++rb) {
  NIAH_UNROLL
  for (int db = 0; db < NDB; ++db) o[rb][db] = metal::make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  m_run[rb] = -INFINITY;
  l_run[rb] = 0.0f;
}
const int wrow = warp * MT * 8;

for (int t = 0; t < ntiles; ++t) {
  const int key0 = kb + t * BC;
  threadgroup_barrier(metal::mem_flags::mem_threadgroup);
#if NIAH_VECTOR_LOADS
  if (k_vec && v_vec) {
    for (int c = tid; c < BC * CPR; c += NTHREADS) {
      int r = c / CPR, cc = c % CPR, key = key0 + r;
      uint4 xk = uint4(0u), xv = uint4(0u);
      if (key < ke) {
        xk = load16(k + kbase + int64_t(key) * k_strides[2] + cc * VEC);
        xv = load16(v + vbase + int64_t(key) * v_strides[2] + cc * VEC);
      }
      store16(sK + r * LDS + cc * VEC, xk);
      store16(sV + r * LDS + cc * VEC, xv);
    }
  } else
#endif
    for (int c = tid; c < BC * D; c += NTHREADS) {
      int r = c / D, d = c % D, key = key0 + r;
      bool ok = key < ke;
      sK[r * LDS + d] = ok ? k[kbase + int64_t(key) * k_strides[2] + int64_t(d) * k_strides[3]] : T(0.0f);
      sV[r * LDS + d] = ok ? v[vbase + int64_t(key) * v_strides[2] + int64_t(d) * v_strides[3]] : T(0.0f);
    }
  threadgroup_barrier(metal::mem_flags::mem_threadgroup);

  // S = Q K^T
  frag s[RB][NKB];
  NIAH_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    NIAH_UNROLL
    for (int nb = 0; nb < NKB; ++nb) s[rb][nb] = metal::make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
  NIAH_UNROLL
  for (int kk = 0; kk < NDB; ++kk) {
    frag a[RB];
    NIAH_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      int r = wrow + rb * 8 + fr;
      a[rb].thread_elements()[0] = float(sQ[r * LDS + kk * 8 + fc]);
      a[rb].thread_elements()[1] = float(sQ[r * LDS + kk * 8 + fc + 1]);
    }
    NIAH_UNROLL
    for (int nb = 0; nb < NKB; ++nb) {
      frag bk;  // (d, key) = K^T
      bk.thread_elements()[0] = float(sK[(nb * 8 + fc) * LDS + kk * 8 + fr]);
      bk.thread_elements()[1] = float(sK[(nb * 8 + fc + 1) * LDS + kk * 8 + fr]);
      NIAH_UNROLL
      for (int rb = 0; rb < RB; ++rb) metal::simdgroup_multiply_accumulate(s[rb][nb], a[rb], bk, s[rb][nb]);
    }
  }

  // Mask (boundary tiles) or fold the scale into the exponent (interior tiles).
  const bool interior = key0 + BC <= ke && (!CAUSAL || key0 + BC - 1 <= q_lo + shift) && MASK == 0;
  const float mul = interior ? scale_log2 : 1.0f;
  if (!interior) {
    NIAH_UNROLL
    for (int rb = 0; rb < RB; ++rb) {
      int gr = row0 + wrow + rb * 8 + fr;
      int gq = metal::min(gr, rows - 1);
      int qi = gq / G;
      int h = kvh * G + gq % G;
      NIAH_UNROLL
      for (int nb = 0; nb < NKB; ++nb) {
        NIAH_UNROLL
        for (int e = 0; e < 2; ++e) {
          float x = s[rb][nb].thread_elements()[e] * scale_log2;
          int key = key0 + nb * 8 + fc + e;
          bool keep = key < ke;
          if (CAUSAL) keep = keep && key <= qi + shift;
          if (MASK != 0 && keep) {
            int64_t mi = int64_t(b) * mask_strides[0] + int64_t(h) * mask_strides[1] +
                         int64_t(qi) * mask_strides[2] + int64_t(key) * mask_strides[3];
            if (MASK == 1) keep = float(mask[mi]) != 0.0f;
            else x += float(mask[mi]) * LOG2E;
          }
          s[rb][nb].thread_elements()[e] = keep ? x : -INFINITY;
        }
      }
    }
  }

  // Online softmax in base 2.
  NIAH_UNROLL
  for (int rb = 0; rb < RB; ++rb) {
    float mx_ = -INFINITY;
    NIAH_UNROLL
    for (int nb = 0; nb < NKB; ++nb)
      mx_ = metal::max(mx_, metal::max(s[rb][nb].thread_elements()[0], s[rb][nb].thread_elements()[1]));
    mx_ = frag_row_max(mx_);
    float m_new = metal::max(m_run[rb], mx_ * mul);
    float m_safe = m_new == -INFINITY ? 0.0f : m_new;
    float alpha = metal::exp2(m_run[rb] - m_safe);
    m_run[rb] = m_new;
    float rs = 0.0f;
    NIAH_UNROLL
    for (int nb = 0; nb < NKB; ++nb) {
      NIAH_UNROLL
      for (int e = 0; e < 2; ++e) {
        float p = metal::exp2(metal::fma(s[rb][nb].thread_elements()[e], mul, -m_safe));
        s[rb][nb].thread_elements()[e] = p;
        rs += p;
      }
    }
    l_run[rb] = l_run[rb] * alpha + rs;
    if (alpha != 1.0f) {  // the running max rarely moves after the first tiles
      NIAH_UNROLL
      for (int db = 0; db < NDB; ++db) {
        o[rb][db].thread_elements()[0] *= alpha;
        o[rb][db].thread_elements()[1] *= alpha;
      }
    }
  }

  // O += P V
  NIAH_UNROLL
  for (int ks = 0; ks < NKB; ++ks) {
    NIAH_UNROLL
    for (int db = 0; db < NDB; ++db) {
      frag bv;  // (key, d)
      bv.thread_elements()[0] = float(sV[(ks * 8 + fr) * LDS + db * 8 + fc]);
      bv.thread_elements()[1] = float(sV[(ks * 8 + fr) * LDS + db * 8 + fc + 1]);
      NIAH_UNROLL
      for (int rb = 0; rb < RB; ++rb) metal::simdgroup_multiply_accumulate(o[rb][db], s[rb][ks], bv, o[rb][db]);
    }
  }
}

// Epilogue: finish the row sums, normalize, write.
const int64_t R = int64_t(Bn) * Hq * qL;
NIAH_UNROLL
for (int rb = 0; rb < RB; ++rb) {
  float l = frag_row_sum(l_run[rb]);
  float m = m_run[rb];
  int gr = row0 + wrow + rb * 8 + fr;
  if (gr >= rows) continue;
  int qi = gr / G, h = kvh * G + gr % G;
  float corr = 1.0f;
  if (SINKS && !SPLIT) {
    float s2 = float(sinks[h]) * LOG2E;
    float mf = metal::max(m, s2);
    corr = metal::exp2(m - mf);
    l = l * corr + metal::exp2(s2 - mf);
    m = mf;
  }
  float inv = l > 0.0f ? corr / l : 0.0f;
  float lse_v = l > 0.0f ? (m + metal::log2(l)) * LN2 : -INFINITY;
  int64_t row_id = (int64_t(b) * Hq + h) * qL + qi;
  int64_t base = (SPLIT ? int64_t(split) * R : 0) + row_id;
  NIAH_UNROLL
  for (int db = 0; db < NDB; ++db)
    store2(out + base * D + db * 8 + fc, o[rb][db].thread_elements()[0] * inv,
           o[rb][db].thread_elements()[1] * inv);
  if (fc == 0) lse[base] = lse_v;
}
