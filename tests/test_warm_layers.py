"""niah.run.layers: the fewest leading layers holding every kind of layer, on small models of
mlx-lm's own classes (random weights), and running a model through them."""

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx_lm.models import qwen2
from mlx_lm.models.cache import KVCache, RotatingKVCache, make_prompt_cache

from niah.run.layers import first_layers, layer_list, leading_layers


def _model(layers: int = 5):
    args = qwen2.ModelArgs(
        model_type="qwen2",
        hidden_size=64,
        num_hidden_layers=layers,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        vocab_size=97,
    )
    return qwen2.Model(args)


def test_layers_of_one_kind_need_one():
    model = _model()
    assert leading_layers(model, make_prompt_cache(model)) == 1


def test_a_layer_quantized_otherwise_is_another_kind():
    model = _model()
    nn.quantize(model.model.layers[2], group_size=32, bits=4)
    assert leading_layers(model, make_prompt_cache(model)) == 3
    nn.quantize(model.model.layers[3], group_size=64, bits=4)  # another group size
    assert leading_layers(model, make_prompt_cache(model)) == 4


def test_a_rotating_cache_is_another_kind():
    model = _model()
    caches = [KVCache() for _ in range(5)]
    caches[1] = RotatingKVCache(max_size=64, keep=4)
    assert leading_layers(model, caches) == 2
    caches[1], caches[3] = KVCache(), RotatingKVCache(max_size=32, keep=4)
    assert leading_layers(model, caches) == 4


def test_a_flag_or_float_attribute_is_another_kind_an_index_is_not():
    model = _model()
    for i, layer in enumerate(model.model.layers):
        layer.layer_idx = i  # an int: every layer has its own, the operations are the same
    assert leading_layers(model, make_prompt_cache(model)) == 1
    model.model.layers[4].self_attn.is_sliding = True
    assert leading_layers(model, make_prompt_cache(model)) is None  # every layer: no saving
    del model.model.layers[4].self_attn.is_sliding
    model.model.layers[2].self_attn.rope.base = 1.0e4
    assert leading_layers(model, make_prompt_cache(model)) == 3


def test_caches_that_do_not_match_the_layers_give_none():
    model = _model()
    assert leading_layers(model, make_prompt_cache(model)[:4]) is None
    assert layer_list(nn.Linear(4, 4)) is None


def test_first_layers_runs_the_prefix_and_restores_the_list():
    model = _model()
    full = model.model.layers
    x = mx.array([[1, 2, 3, 4]])
    with first_layers(model, 2):
        assert len(model.layers) == 2
        caches = make_prompt_cache(model)
        assert len(caches) == 2
        mx.eval(model(x, cache=caches))
        assert caches[0].offset == 4
    assert model.model.layers is full and len(model.layers) == 5
    with pytest.raises(RuntimeError), first_layers(model, 1):
        raise RuntimeError("a failed prefill")
    assert model.model.layers is full
