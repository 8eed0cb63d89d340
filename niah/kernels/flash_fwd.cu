// niah flash attention forward, CUDA body (mx.fast.cuda_kernel; helpers in flash_common.cuh).
//
// One block = BR packed query rows of one (batch, kv head) x one key split. Rows pack the G
// query heads sharing a kv head: row r is query position r / G of head kvh * G + r % G, so
// K/V tiles are loaded once for the whole group (GQA without tiling K/V).
// Warps: MW along rows, each owning MT tiles of 16 rows. Keys stream in tiles of BC through a
// two-stage cp.async pipeline; S = Q K^T and O += P V run on mma.sync m16n8k16 (fp32
// accumulators) with the online softmax in base 2 between them.
// SPLIT: write the normalized partial (o float32, lse natural log) of this split for the
// combine kernel; else write the final output (sinks applied) and its lse.
//
// Template constants: T, D, MW, MT, BC, CAUSAL, MASK (0 none, 1 bool keep, 2 additive),
// SINKS, SPLIT. params (int32): [causal shift, scale (float bits), keys per split].
// Mirrors flash_fwd.metal.

using namespace niah_fa;
constexpr int BR = MW * MT * 16;
constexpr int NTHREADS = 32 * MW;
constexpr int LDS = D + 8;  // padded shared row: ldmatrix rows fall in different banks
constexpr int NKT = BC / 8;
constexpr int NDT = D / 8;
constexpr int CPR = D / 8;  // 16-byte chunks per row

extern __shared__ __align__(16) unsigned char smem_raw[];
T* sQ = reinterpret_cast<T*>(smem_raw);
T* sK = sQ + BR * LDS;
T* sV = sK + 2 * BC * LDS;

const int tid = threadIdx.x;
const int lane = tid & 31;
const int warp = tid >> 5;
const int Bn = q_shape[0];
const int Hq = q_shape[1];
const int qL = q_shape[2];
const int Hkv = k_shape[1];
const int kL = k_shape[2];
const int G = Hq / Hkv;
const int rows = G * qL;
const int row0 = blockIdx.x * BR;
const int b = blockIdx.y / Hkv;
const int kvh = blockIdx.y % Hkv;
const int split = blockIdx.z;
const int shift = params[0];
const float scale_log2 = __int_as_float(params[1]) * LOG2E;
const int split_len = params[2];

// Key range of this block.
const int last_row = min(rows, row0 + BR) - 1;
const int q_lo = row0 / G;
const int q_hi = last_row / G;
const int kb = split * split_len;
int ke = min(kL, kb + split_len);
if (CAUSAL) ke = min(ke, q_hi + shift + 1);
const int ntiles = ke > kb ? (ke - kb + BC - 1) / BC : 0;

const T* kbase = k + (long long)b * k_strides[0] + (long long)kvh * k_strides[1];
const T* vbase = v + (long long)b * v_strides[0] + (long long)kvh * v_strides[1];
const bool q_vec = vector_ok(q, q_strides);
const bool k_vec = vector_ok(k, k_strides);
const bool v_vec = vector_ok(v, v_strides);

// Q tile -> shared (rows past the end are zero).
if (q_vec) {
  for (int c = tid; c < BR * CPR; c += NTHREADS) {
    int r = c / CPR, cc = c % CPR, gr = row0 + r;
    bool ok = gr < rows;
    const T* src = q;
    if (ok) {
      int qi = gr / G, h = kvh * G + gr % G;
      src = q + (long long)b * q_strides[0] + (long long)h * q_strides[1] +
            (long long)qi * q_strides[2] + cc * 8;
    }
    cp_async16(sQ + r * LDS + cc * 8, src, ok);
  }
} else {
  for (int c = tid; c < BR * D; c += NTHREADS) {
    int r = c / D, d = c % D, gr = row0 + r;
    T x = T(0.f);
    if (gr < rows) {
      int qi = gr / G, h = kvh * G + gr % G;
      x = q[(long long)b * q_strides[0] + (long long)h * q_strides[1] +
            (long long)qi * q_strides[2] + (long long)d * q_strides[3]];
    }
    sQ[r * LDS + d] = x;
  }
}

auto load_kv = [&](int tile, int stage) {
  const int key0 = kb + tile * BC;
  T* dk = sK + stage * BC * LDS;
  T* dv = sV + stage * BC * LDS;
  if (k_vec && v_vec) {
    for (int c = tid; c < BC * CPR; c += NTHREADS) {
      int r = c / CPR, cc = c % CPR, key = key0 + r;
      bool ok = key < ke;
      long long kofs = ok ? (long long)key * k_strides[2] + cc * 8 : 0;
      long long vofs = ok ? (long long)key * v_strides[2] + cc * 8 : 0;
      cp_async16(dk + r * LDS + cc * 8, kbase + kofs, ok);
      cp_async16(dv + r * LDS + cc * 8, vbase + vofs, ok);
    }
  } else {
    for (int c = tid; c < BC * D; c += NTHREADS) {
      int r = c / D, d = c % D, key = key0 + r;
      bool ok = key < ke;
      dk[r * LDS + d] = ok ? kbase[(long long)key * k_strides[2] + (long long)d * k_strides[3]] : T(0.f);
      dv[r * LDS + d] = ok ? vbase[(long long)key * v_strides[2] + (long long)d * v_strides[3]] : T(0.f);
    }
  }
};

float o[MT][NDT][4];
float m_run[MT][2];
float l_run[MT][2];
#pragma unroll
for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
  for (int dt = 0; dt < NDT; ++dt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[mt][dt][i] = 0.f;
  }
  m_run[mt][0] = m_run[mt][1] = -INFINITY;
  l_run[mt][0] = l_run[mt][1] = 0.f;
}

const int wrow = warp * MT * 16;  // first row of this warp inside the tile
if (ntiles > 0) load_kv(0, 0);
cp_async_commit();

for (int t = 0; t < ntiles; ++t) {
  if (t + 1 < ntiles) load_kv(t + 1, (t + 1) & 1);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
  const T* cK = sK + (t & 1) * BC * LDS;
  const T* cV = sV + (t & 1) * BC * LDS;

  // S = Q K^T
  float s[MT][NKT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NKT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) s[mt][nt][i] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    unsigned a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      ldsm_x4(a[mt], sQ + (wrow + mt * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (int np = 0; np < BC / 16; ++np) {
      unsigned bk[4];
      ldsm_x4(bk, cK + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk * 16 +
                      ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(s[mt][2 * np], a[mt], bk[0], bk[1]);
        Mma<T>::run(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
      }
    }
  }

  // Mask. Interior tiles keep raw scores and fold the scale into the exponent (mul);
  // boundary tiles are scaled into base 2 here and masked (mul = 1).
  const int key0 = kb + t * BC;
  const bool interior = key0 + BC <= ke && (!CAUSAL || key0 + BC - 1 <= q_lo + shift) && MASK == 0;
  const float mul = interior ? scale_log2 : 1.f;
  if (!interior) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < NKT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float x = s[mt][nt][i] * scale_log2;
          int gr = row0 + wrow + mt * 16 + (lane >> 2) + ((i >> 1) << 3);
          int key = key0 + nt * 8 + 2 * (lane & 3) + (i & 1);
          int gq = min(gr, rows - 1);
          int qi = gq / G;
          bool keep = key < ke;
          if (CAUSAL) keep = keep && key <= qi + shift;
          if (MASK != 0 && keep) {
            int h = kvh * G + gq % G;
            long long mi = (long long)b * mask_strides[0] + (long long)h * mask_strides[1] +
                           (long long)qi * mask_strides[2] + (long long)key * mask_strides[3];
            if (MASK == 1) keep = to_f(mask[mi]) != 0.f;
            else x += to_f(mask[mi]) * LOG2E;
          }
          s[mt][nt][i] = keep ? x : -INFINITY;
        }
      }
    }
  }

  // Online softmax in base 2 (each row lives in the 4 lanes of a quad).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h2 = 0; h2 < 2; ++h2) {
      float mx_ = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < NKT; ++nt)
        mx_ = fmaxf(mx_, fmaxf(s[mt][nt][2 * h2], s[mt][nt][2 * h2 + 1]));
      mx_ = fmaxf(mx_, __shfl_xor_sync(0xffffffffu, mx_, 1));
      mx_ = fmaxf(mx_, __shfl_xor_sync(0xffffffffu, mx_, 2));
      float m_new = fmaxf(m_run[mt][h2], mx_ * mul);
      float m_safe = m_new == -INFINITY ? 0.f : m_new;
      float alpha = fast_exp2(m_run[mt][h2] - m_safe);
      m_run[mt][h2] = m_new;
      float rs = 0.f;
#pragma unroll
      for (int nt = 0; nt < NKT; ++nt) {
        float p0 = fast_exp2(fmaf(s[mt][nt][2 * h2], mul, -m_safe));
        float p1 = fast_exp2(fmaf(s[mt][nt][2 * h2 + 1], mul, -m_safe));
        s[mt][nt][2 * h2] = p0;
        s[mt][nt][2 * h2 + 1] = p1;
        rs += p0 + p1;
      }
      l_run[mt][h2] = l_run[mt][h2] * alpha + rs;
      if (alpha != 1.f) {  // the running max rarely moves after the first tiles
#pragma unroll
        for (int dt = 0; dt < NDT; ++dt) {
          o[mt][dt][2 * h2] *= alpha;
          o[mt][dt][2 * h2 + 1] *= alpha;
        }
      }
    }
  }

  // O += P V (P re-packed from the S accumulators as A fragments).
#pragma unroll
  for (int ks = 0; ks < BC / 16; ++ks) {
    unsigned a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = Mma<T>::pack(s[mt][2 * ks][0], s[mt][2 * ks][1]);
      a[mt][1] = Mma<T>::pack(s[mt][2 * ks][2], s[mt][2 * ks][3]);
      a[mt][2] = Mma<T>::pack(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
      a[mt][3] = Mma<T>::pack(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      unsigned bv[4];
      ldsm_x4_t(bv, cV + (ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3)) * LDS + dp * 16 +
                        ((lane >> 4) << 3));
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(o[mt][2 * dp], a[mt], bv[0], bv[1]);
        Mma<T>::run(o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
      }
    }
  }
  __syncthreads();
}
cp_async_wait<0>();

// Epilogue: finish the row sums, normalize, write.
const long long R = (long long)Bn * Hq * qL;
#pragma unroll
for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
  for (int h2 = 0; h2 < 2; ++h2) {
    float l = l_run[mt][h2];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    float m = m_run[mt][h2];
    int gr = row0 + wrow + mt * 16 + (lane >> 2) + h2 * 8;
    if (gr >= rows) continue;
    int qi = gr / G, h = kvh * G + gr % G;
    float corr = 1.f;
    if (SINKS && !SPLIT) {
      float s2 = to_f(sinks[h]) * LOG2E;
      float mf = fmaxf(m, s2);
      corr = fast_exp2(m - mf);
      l = l * corr + fast_exp2(s2 - mf);
      m = mf;
    }
    float inv = l > 0.f ? corr / l : 0.f;
    float lse_v = l > 0.f ? (m + log2f(l)) * LN2 : -INFINITY;
    long long row_id = ((long long)b * Hq + h) * qL + qi;
    long long base = (SPLIT ? (long long)split * R : 0) + row_id;
#pragma unroll
    for (int dt = 0; dt < NDT; ++dt)
      store2(out + base * D + dt * 8 + 2 * (lane & 3), o[mt][dt][2 * h2] * inv,
             o[mt][dt][2 * h2 + 1] * inv);
    if ((lane & 3) == 0) lse[base] = lse_v;
  }
}
