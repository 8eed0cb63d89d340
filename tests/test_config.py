"""Parsing of contexts, depths and lists; RunConfig validation and hashing."""

import pytest

from niah.config import (RunConfig, format_context, parse_context, parse_contexts, parse_depths,
                         parse_int_list)
from niah.errors import NiahError


@pytest.mark.parametrize("text,tokens", [("128k", 131072), ("8000", 8000), ("1m", 1048576),
                                         ("4K", 4096), ("0.5k", 512), (" 32k ", 32768)])
def test_parse_context(text, tokens):
    assert parse_context(text) == tokens


@pytest.mark.parametrize("text", ["128q", "0", "-4k", "", "k", "1.3", "4kk"])
def test_parse_context_rejects(text):
    with pytest.raises(NiahError) as e:
        parse_context(text)
    assert "\n" not in str(e.value)


def test_parse_contexts_list_keeps_order_and_drops_repeats():
    assert parse_contexts("4k,1k,4096") == (4096, 1024)


def test_depth_list_and_range():
    assert parse_depths("0,0.25,0.5") == (0.0, 0.25, 0.5)
    assert parse_depths("0:1:0.1") == tuple(round(i / 10, 6) for i in range(11))
    assert parse_depths("0:1:0.5") == (0.0, 0.5, 1.0)
    assert parse_depths("0.2:0.2:0.1") == (0.2,)


@pytest.mark.parametrize("text,message", [
    ("1.5", "depth 1.5 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
    ("-0.1", "depth -0.1 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
    ("0:1", "bad depth range '0:1': use start:stop:step like 0:1:0.1"),
    ("1:0:0.1", "bad depth range '1:0:0.1': step must be > 0 and stop >= start, like 0:1:0.1"),
    ("0:1:0", "bad depth range '0:1:0': step must be > 0 and stop >= start, like 0:1:0.1"),
    ("half", "bad depth 'half': use a number between 0 and 1 like 0.5"),
])
def test_depth_errors(text, message):
    with pytest.raises(NiahError) as e:
        parse_depths(text)
    assert str(e.value) == message


def test_int_lists():
    assert parse_int_list("4,8", what="--kv-bits", allowed=(4, 8)) == (4, 8)
    assert parse_int_list("none,4", what="--kv-bits", allowed=(4, 8), allow_none=True) == (None, 4)
    with pytest.raises(NiahError):
        parse_int_list("7", what="--kv-bits", allowed=(4, 8))


def test_format_context():
    assert [format_context(n) for n in (131072, 1048576, 8000, 2048)] == ["128K", "1M", "8000", "2K"]


def test_runconfig_validation_and_hash():
    with pytest.raises(NiahError, match="--samples 0 is not allowed: use 1 or more"):
        RunConfig(model="m", samples=0)
    with pytest.raises(NiahError, match=r"no \{value\} placeholder"):
        RunConfig(model="m", needle="no placeholder here")
    a = RunConfig(model="m", contexts=(1024,), out="x")
    b = RunConfig(model="m", contexts=(2048,), out="y")
    assert a.hash() == b.hash()  # the grid and output folder do not change what a trial measures
    assert a.hash() != RunConfig(model="m", seed=1).hash()
    assert RunConfig.from_dict(a.to_dict()) == a
