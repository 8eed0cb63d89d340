"""Parsing of contexts, depths and lists; RunConfig validation and hashing."""

import json

import pytest

from niah.config import RunConfig
from niah.errors import NiahError
from niah.parse import (
    MAX_RANGE_VALUES,
    format_context,
    parse_context,
    parse_contexts,
    parse_depths,
    parse_int_list,
)


@pytest.mark.parametrize(
    "text,tokens",
    [
        ("128k", 131072),
        ("8000", 8000),
        ("1m", 1048576),
        ("4K", 4096),
        ("0.5k", 512),
        (" 32k ", 32768),
    ],
)
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


@pytest.mark.parametrize(
    "text,depths",
    [
        ("0:0.5:0.3", (0.0, 0.3)),  # the stop is not hit: nothing beyond it
        ("0:1:0.4", (0.0, 0.4, 0.8)),
        ("0:1:0.6", (0.0, 0.6)),
        ("0:1:0.3", (0.0, 0.3, 0.6, 0.9)),
        ("0.1:0.9:0.2", (0.1, 0.3, 0.5, 0.7, 0.9)),  # hit within float tolerance: included, exact
        ("0:1:0.25", (0.0, 0.25, 0.5, 0.75, 1.0)),
        ("0.7:1:0.1", (0.7, 0.8, 0.9, 1.0)),
    ],
)
def test_depth_range_includes_the_stop_only_when_hit(text, depths):
    assert parse_depths(text) == depths


def test_depth_range_float_noise_and_cap():
    # 0.1 * 3 is 0.30000000000000004 in floats: the grid holds the decimal the user meant
    assert parse_depths("0:1:0.1")[3] == 0.3 and parse_depths("0:1:0.1")[-1] == 1.0
    assert len(parse_depths("0:1:0.001")) == MAX_RANGE_VALUES == 1001
    # tiny steps stay distinct (no rounding to 6 places merging them)
    assert len(parse_depths("0:0.0001:0.0000001")) == 1001


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "0:1:1e-9",
            "depth range '0:1:1e-9' gives more than the 1001 values allowed: use a larger step",
        ),
        (
            "0:1:0.000999",
            "depth range '0:1:0.000999' gives more than the 1001 values allowed: use a larger step",
        ),
        (
            "0:1e300:1e-300",
            "depth range '0:1e300:1e-300' gives more than the 1001 values allowed: use a larger step",
        ),
        (
            "0:inf:0.1",
            "bad depth range '0:inf:0.1': start, stop and step must be finite numbers, like 0:1:0.1",
        ),
        (
            "0:1:nan",
            "bad depth range '0:1:nan': start, stop and step must be finite numbers, like 0:1:0.1",
        ),
        (
            "nan:1:0.1",
            "bad depth range 'nan:1:0.1': start, stop and step must be finite numbers, like 0:1:0.1",
        ),
        (
            "0:one:0.1",
            "bad depth range '0:one:0.1': start, stop and step must be finite numbers, like 0:1:0.1",
        ),
        ("nan", "bad depth 'nan': use a number between 0 and 1 like 0.5"),
        ("0,inf", "bad depth 'inf': use a number between 0 and 1 like 0.5"),
        ("0:2:0.5", "depth 1.5 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
        ("1.5", "depth 1.5 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
        ("-0.1", "depth -0.1 is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"),
        ("0:1", "bad depth range '0:1': use start:stop:step like 0:1:0.1"),
        ("1:0:0.1", "bad depth range '1:0:0.1': step must be > 0 and stop >= start, like 0:1:0.1"),
        ("0:1:0", "bad depth range '0:1:0': step must be > 0 and stop >= start, like 0:1:0.1"),
        ("half", "bad depth 'half': use a number between 0 and 1 like 0.5"),
    ],
)
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
    assert [format_context(n) for n in (131072, 1048576, 8000, 2048)] == [
        "128K",
        "1M",
        "8000",
        "2K",
    ]


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


NEEDLE_FIX = "write literal braces as {{ and }} and the value as {value}"


@pytest.mark.parametrize(
    "needle,message",
    [
        (
            "{value} and {other}",
            "the needle template '{value} and {other}' has the placeholder {other}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "{value} {}",
            "the needle template '{value} {}' has the placeholder {}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "{value} {0}",
            "the needle template '{value} {0}' has the placeholder {0}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "{value:>9}",
            "the needle template '{value:>9}' has the placeholder {value:>9}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "{value!r}",
            "the needle template '{value!r}' has the placeholder {value!r}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "{value.real}",
            "the needle template '{value.real}' has the placeholder {value.real}: only {value} is filled in; "
            + NEEDLE_FIX,
        ),
        (
            "brace { {value}",
            "the needle template 'brace { {value}' has an unpaired brace: " + NEEDLE_FIX,
        ),
        ("{value} }", "the needle template '{value} }' has an unpaired brace: " + NEEDLE_FIX),
        (
            "{{value}}",
            "the needle template has no {value} placeholder: write it like 'The secret passkey is {value}.'",
        ),
    ],
)
def test_needle_template_errors(needle, message):
    with pytest.raises(NiahError) as e:
        RunConfig(model="m", needle=needle)
    assert str(e.value) == message


def test_needle_template_literal_braces_are_supported():
    cfg = RunConfig(model="m", needle="The code {{x}} is {value}, again {value}.")
    assert cfg.needle.format(value="42") == "The code {x} is 42, again 42."


@pytest.mark.parametrize(
    "data,message",
    [
        ([], "the config is list, not a JSON object"),
        (None, "the config is null, not a JSON object"),
        ("x", "the config is str, not a JSON object"),
        ({"contexts": [1024]}, "the config has no 'model' field"),
        (
            {"model": "m", "contexts": 5},
            "config field 'contexts' is 5: expected a non-empty list of positive whole numbers",
        ),
        (
            {"model": "m", "contexts": []},
            "config field 'contexts' is []: expected a non-empty list of positive whole numbers",
        ),
        (
            {"model": "m", "contexts": ["1k"]},
            "config field 'contexts' is [\"1k\"]: expected a non-empty list of positive whole numbers",
        ),
        (
            {"model": "m", "depths": [0.5, 2]},
            "config field 'depths' is [0.5, 2]: expected a non-empty list of numbers in [0, 1]",
        ),
        (
            {"model": "m", "samples": "2"},
            "config field 'samples' is \"2\": expected a whole number",
        ),
        (
            {"model": "m", "samples": True},
            "config field 'samples' is true: expected a whole number",
        ),
        ({"model": 5}, "config field 'model' is 5: expected a string"),
        (
            {"model": "m", "prefix_reuse": "yes"},
            "config field 'prefix_reuse' is \"yes\": expected true or false",
        ),
        (
            {"model": "m", "kv_bits": 4},
            "config field 'kv_bits' is 4: expected a non-empty list of whole numbers or nulls",
        ),
        (
            {"model": "m", "chunk_size": 1.5},
            "config field 'chunk_size' is 1.5: expected a whole number or null",
        ),
        (
            {"model": "m", "needle": "x" * 50},
            "the needle template has no {value} placeholder: write it like 'The secret passkey is {value}.'",
        ),
        ({"model": "m", "extra": []}, "config field 'extra' is []: expected an object"),
        (
            {"model": "m", "seed": ["x" * 50]},
            "config field 'seed' is [\"" + "x" * 35 + "...: expected a whole number",
        ),
    ],
)
def test_config_from_dict_validates(data, message):
    with pytest.raises(NiahError) as e:
        RunConfig.from_dict(data)
    assert str(e.value) == message


def test_config_from_dict_round_trip_and_unknown_keys():
    cfg = RunConfig(
        model="m",
        contexts=(1024, 4096),
        depths=(0.0, 0.5),
        kv_bits=(None, 4),
        chunk_size=4096,
        extra={"note": 1},
    )
    data = {**cfg.to_dict(), "config_hash": cfg.hash(), "added_later": [1]}
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}  # as JSON gives
    assert RunConfig.from_dict(data) == cfg


def test_every_config_field_is_type_checked_on_load():
    import dataclasses

    from niah.config import RunConfig
    from niah.parse import CONFIG_KINDS

    kinds = {n for names, _ in CONFIG_KINDS.values() for n in names}
    assert {f.name for f in dataclasses.fields(RunConfig)} == kinds
    cfg = RunConfig(
        model="m",
        task="multi-key",
        needles=3,
        keys=("red", "blue"),
        gguf_quant="q4",
        rope_scaling="yarn:4",
    )
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _source_copy(tmp_path):
    """A copy of niah's package folder and README, to edit without touching the real tree."""
    import shutil
    from pathlib import Path

    import niah

    root = Path(niah.__file__).resolve().parent
    pkg = tmp_path / "src" / "niah"
    shutil.copytree(root, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    readme = root.parent / "README.md"
    if readme.is_file():
        shutil.copy(readme, pkg.parent / "README.md")
    return pkg


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_help_text_and_readme_edits_keep_the_config_hash(tmp_path):
    """Fixing a typo in a help string or the README keeps run folders resumable and poolable."""
    from niah.identity import niah_source_digest

    pkg = _source_copy(tmp_path)
    cfg = RunConfig(model="m")
    before = niah_source_digest(pkg)
    hashed = cfg.hash({"niah_version": f"0.1.0+src.{before}"})
    _edit(
        pkg / "options.py",
        '"Seed for haystack and needle values."',
        '"Seed for the haystack and needle values."',
    )
    _edit(pkg / "cli.py", "130 interrupted", "130 when interrupted")
    (pkg.parent / "README.md").write_text("# niah\n\nrewritten\n")
    niah_source_digest.cache_clear()
    after = niah_source_digest(pkg)
    assert after == before
    assert cfg.hash({"niah_version": f"0.1.0+src.{after}"}) == hashed


@pytest.mark.parametrize(
    "rel,old,new",
    [
        ("scoring.py", "def ", "def _unused(): pass\n\n\ndef "),
        ("kernels/flash_fwd.metal", "\n", "\n// edited\n"),
        ("kernels/flash_fwd.cu", "\n", "\n// edited\n"),
        ("haystack.py", "\n", "\n# edited\n"),
        ("datasets/tasks.jsonl", "\n", "\n\n"),
    ],
)
def test_scoring_kernel_prompt_and_data_edits_change_the_config_hash(tmp_path, rel, old, new):
    from niah.identity import niah_source_digest

    pkg = _source_copy(tmp_path)
    before = niah_source_digest(pkg)
    _edit(pkg / rel, old, new)
    niah_source_digest.cache_clear()
    assert niah_source_digest(pkg) != before
