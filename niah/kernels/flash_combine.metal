// niah split-K combine, Metal body: merges the S partials of flash_fwd.metal (SPLIT) by their
// logsumexp and applies the sinks. One thread per output element;
// the loads of both passes are independent of each other, so unrolled loops keep many in flight. Mirrors flash_combine.cu.
// Loads stay scalar (no vector_ok here): opart and lpart are flash_fwd.metal's own fresh,
// contiguous float32 outputs, and the lanes of a simdgroup read consecutive opart elements, so
// each load instruction already covers whole lines. Per-thread float4s would change the launch
// grid (niah/kernels/flash.py) and flash_combine.cu with it.
// Inputs: opart float32 [S, B, Hq, qL, D], lpart float32 [S, B*Hq*qL], sinks [Hq] (or a dummy).
// Outputs: out O [B, Hq, qL, D] (the input dtype, or float32 for host-side merging),
// lse float32 [B, Hq, qL].

const int S = opart_shape[0];
const int Hq = opart_shape[2];
const int qL = opart_shape[3];
const int64_t R = int64_t(opart_shape[1]) * Hq * qL;
const int64_t idx = int64_t(thread_position_in_grid.x);
if (idx >= R * D) return;
const int64_t row = idx / D;
const int d = int(idx % D);
float m = -INFINITY;
for (int s = 0; s < S; ++s) m = metal::max(m, lpart[s * R + row]);
float sink = -INFINITY;
if (SINKS) {
  sink = float(sinks[int((row / qL) % Hq)]);
  m = metal::max(m, sink);
}
float acc = 0.0f, tot = 0.0f;
if (m != -INFINITY) {
  for (int s = 0; s < S; ++s) {
    float w = metal::exp(lpart[s * R + row] - m);
    tot += w;
    acc += w * opart[(s * R + row) * D + d];
  }
  if (SINKS) tot += metal::exp(sink - m);
}
out[idx] = O(tot > 0.0f ? acc / tot : 0.0f);
if (d == 0) lse[row] = tot > 0.0f ? m + metal::log(tot) : -INFINITY;
