"""Hostile review of niah.kernel_fill and niah.identity.mlx_env (the kernel fill and MLX's
batching settings): what a model, the cache folder or the environment can do to them."""

from __future__ import annotations

import mlx.nn as nn
import pytest

from niah.kernel_fill import kernel_specs, run_spec


class _Layers(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers


@pytest.mark.parametrize(
    "bits,group,mode",
    [(3, 64, "affine"), (5, 64, "affine"), (6, 64, "affine"), (4, 32, "mxfp4"), (4, 16, "nvfp4")],
)
def test_a_child_can_call_the_kernel_of_every_bits_and_mode(bits, group, mode):
    # 6-bit models are common; MLX packs k * bits / 32 words per row, not k // (32 // bits),
    # and the floating-point modes keep uint8 scales and no biases
    layer = nn.QuantizedLinear(2048, 256, bias=False, group_size=group, bits=bits, mode=mode)
    (spec,) = [s for s in kernel_specs(_Layers([layer])) if s.kind == "qmm"]
    run_spec(spec)


def test_embeddings_not_named_embed_tokens_get_their_gathers():
    class Gpt2(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(512, 128)

    families = [s.family() for s in kernel_specs(Gpt2())]
    assert families == ["gather-float32-int32", "gather-float32-uint32"]
