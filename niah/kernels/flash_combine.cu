// niah split-K combine, CUDA body: merges the S partials of flash_fwd.cu (SPLIT) by their
// logsumexp and applies the sinks. One thread per output element;
// the loads of both passes are independent of each other, so unrolled loops keep many in flight.
// Inputs: opart float32 [S, B, Hq, qL, D], lpart float32 [S, B*Hq*qL], sinks [Hq] (or a dummy).
// Outputs: out O [B, Hq, qL, D] (the input dtype, or float32 for host-side merging),
// lse float32 [B, Hq, qL]. Mirrors flash_combine.metal.

using namespace niah_fa;
const int S = opart_shape[0];
const int Hq = opart_shape[2];
const int qL = opart_shape[3];
const long long R = (long long)opart_shape[1] * Hq * qL;
const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
if (idx >= R * D) return;
const long long row = idx / D;
const int d = (int)(idx % D);
float m = -INFINITY;
#pragma unroll 8
for (int s = 0; s < S; ++s) m = fmaxf(m, lpart[s * R + row]);
float sink = -INFINITY;
if (SINKS) {
  sink = to_f(sinks[(int)((row / qL) % Hq)]);
  m = fmaxf(m, sink);
}
float acc = 0.f, tot = 0.f;
if (m != -INFINITY) {
#pragma unroll 8
  for (int s = 0; s < S; ++s) {
    float w = expf(lpart[s * R + row] - m);
    tot += w;
    acc += w * opart[(s * R + row) * D + d];
  }
  if (SINKS) tot += expf(sink - m);
}
out[idx] = O(tot > 0.f ? acc / tot : 0.f);
if (d == 0) lse[row] = tot > 0.f ? m + logf(tot) : -INFINITY;
