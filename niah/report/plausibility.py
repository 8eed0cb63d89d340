"""The plausibility guard: flags a trial whose timing is physically impossible on its device
(attention FLOP/s above the device's peak, or KV-cache reads faster than its memory)."""

from __future__ import annotations

from ..scoring import ERROR, SKIP

# Published dense peaks, used to flag physically impossible timings (FLOP/s; bytes/s).
DEVICE_PEAKS = {
    "h100": (989e12, 3.35e12),
    "h200": (989e12, 4.8e12),
    "a100": (312e12, 2.0e12),
    "m1": (10.4e12, 0.8e12),
    "m2": (13.6e12, 0.8e12),
    "m3": (14.2e12, 0.8e12),
    "m4": (17e12, 0.55e12),
    "apple": (40e12, 0.82e12),
    "cpu": (10e12, 0.5e12),
}
DEFAULT_PEAK = (2000e12, 8e12)


def attention_flops(r: dict) -> float:
    """Attention FLOPs of a trial's prefill (causal, computed tokens over the whole cache)."""
    heads, d = r.get("n_heads") or 0, r.get("head_dim") or 0
    layers = r.get("n_layers") or 0
    total = r.get("context_tokens") or r.get("context") or 0
    computed = r.get("prefilled_tokens") or total
    reused = total - computed
    # sum over computed query rows of the keys they see: rows reused..total
    pairs = (total * (total + 1) - reused * (reused + 1)) / 2
    return 4.0 * layers * heads * d * pairs


def _peaks(device: str) -> tuple[float, float]:
    dev = (device or "").lower()
    for key, peaks in DEVICE_PEAKS.items():
        if key in dev:
            return peaks
    return DEFAULT_PEAK


def suspect(r: dict) -> str | None:
    """Reason a trial's timing is physically impossible, or None."""
    if r.get("verdict") in (SKIP, ERROR) or not r.get("prefill_s"):
        return None
    flop_peak, bw_peak = _peaks(r.get("device", ""))
    achieved = attention_flops(r) / max(r["prefill_s"], 1e-12)
    if achieved > flop_peak:
        return (
            f"prefill at {achieved / 1e12:.0f} TFLOP/s of attention alone is above the "
            f"device peak of {flop_peak / 1e12:.0f}"
        )
    kv_bytes = (
        2
        * (r.get("n_layers") or 0)
        * (r.get("n_kv_heads") or 0)
        * (r.get("head_dim") or 0)
        * (r.get("context_tokens") or 0)
        * 2
    )
    if r.get("decode_s") and r.get("generated_tokens", 0) > 1:
        per_token = r["decode_s"] / (r["generated_tokens"] - 1)
        bw = kv_bytes / max(per_token, 1e-12)
        if bw > bw_peak:
            return (
                f"decode reads the KV cache at {bw / 1e12:.1f} TB/s, above the device peak "
                f"of {bw_peak / 1e12:.1f}"
            )
    return None
