"""GGUF reading on the embedded SmolLM2 file and hand-written headers: the header parser
against mx.load, the gguf-package reader against mx.load's bit-exact reading, the weight modes,
the file digest, and one-line errors for files nobody can read."""

import hashlib
import struct

import mlx.core as mx
import numpy as np
import pytest
from conftest import invoke

from niah.errors import NiahError
from niah.gguf.read import file_digest, parse_header, read_gguf


def test_header_parser_matches_mx_load(gguf_path):
    tensors, meta = mx.load(gguf_path, return_metadata=True)
    header = parse_header(gguf_path)
    assert set(header.meta) == set(meta)
    for key, value in meta.items():
        ours = header.meta[key]
        if isinstance(value, (str, list)):
            assert ours == value, key
        else:
            assert np.array(ours).tolist() == np.array(value).tolist(), key
    names = {t.name for t in header.tensors}
    assert names == {n.rsplit(".", 1)[0] + ".weight" for n in tensors if n.endswith(".scales")} | {
        n for n in tensors if not n.endswith((".scales", ".biases"))
    }


def _dequantized(tensors: dict, name: str) -> mx.array:
    base = name[: -len(".weight")]
    if f"{base}.scales" not in tensors:
        return tensors[name].astype(mx.float32)
    w = tensors[name]
    s, b = (tensors[f"{base}.{k}"].astype(mx.float32) for k in ("scales", "biases"))
    bits = w.shape[-1] * 32 // (s.shape[-1] * 32)
    return mx.dequantize(w, s, b, group_size=32, bits=bits)


def test_gguf_package_reader_matches_mx_load(gguf_path):
    """The numpy dequantization path (used for K-quants) read on Q4_1/Q8_0/F32 tensors gives
    what mx.load gives: byte offsets, block sizes and shapes are right."""
    from niah.gguf.read import _read_with_gguf

    ref, _ = mx.load(gguf_path, return_metadata=True)
    header = parse_header(gguf_path)
    raw = _read_with_gguf(
        __import__("pathlib").Path(gguf_path), header, quant="f16", types={"Q4_1": 1}
    )
    checked = 0
    for name in (
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.29.ffn_down.weight",
        "blk.3.attn_norm.weight",
        "output_norm.weight",
    ):
        a = raw.tensors[name].astype(mx.float32)
        b = _dequantized(ref, name)
        assert a.shape == b.shape, name
        assert mx.allclose(a, b, rtol=1e-3, atol=1e-4).item(), name
        checked += 1
    assert checked == 5 and not raw.quantized


@pytest.mark.parametrize("quant,bits,group", [("auto", 4, 32), ("q8", 8, 64), ("q4", 4, 64)])
def test_weight_modes(gguf_path, quant, bits, group):
    raw = read_gguf(gguf_path, quant=quant)
    assert raw.quantized["blk.0.attn_q"] == (group, bits)
    assert raw.weights == ("native" if quant == "auto" else f"{quant}/g64")
    assert raw.types == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    if quant != "auto":
        ref, _ = mx.load(gguf_path, return_metadata=True)
        q = raw.tensors
        w = mx.dequantize(
            q["blk.0.attn_q.weight"],
            q["blk.0.attn_q.scales"],
            q["blk.0.attn_q.biases"],
            group_size=group,
            bits=bits,
        )
        b = _dequantized(ref, "blk.0.attn_q.weight")
        err = (mx.abs(w - b).max() / mx.abs(b).max()).item()
        assert err < (0.01 if bits == 8 else 0.1), err


def test_f16_mode_keeps_no_quantized_tensor(gguf_path):
    raw = read_gguf(gguf_path, quant="f16")
    assert raw.quantized == {} and raw.weights == "f16"
    assert raw.tensors["blk.0.attn_q.weight"].dtype == mx.float16
    assert raw.tensors["blk.0.attn_norm.weight"].dtype == mx.float32


def test_digest_is_sha256_of_the_file(gguf_path):
    with open(gguf_path, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    assert file_digest(gguf_path) == want


def _tiny_gguf(path, type_id: int, dims=(32, 2), data: bytes = b"\0" * 4096) -> None:
    """One tensor of the given GGML type id; data after the 32-byte aligned header."""

    def s(text):
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = s("general.architecture") + struct.pack("<I", 8) + s("gemma3")
    info = (
        s("blk.0.attn_q.weight")
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", type_id, 0)
    )
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kv + info
    assert len(head) % 32, "the test needs padding after the header"
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(head + data)


def test_tensor_data_starts_at_the_aligned_offset(tmp_path):
    from niah.gguf.read import _read_with_gguf

    pytest.importorskip("gguf")
    values = np.arange(64, dtype=np.float32)
    path = tmp_path / "f32.gguf"
    _tiny_gguf(path, 0, data=values.tobytes())
    raw = _read_with_gguf(path, parse_header(path), quant="f16", types={"F32": 1})
    assert (
        raw.tensors["blk.0.attn_q.weight"].astype(mx.float32).tolist()
        == values.reshape(2, 32).tolist()
    )


@pytest.mark.parametrize("type_id,name", [(9, "Q8_1"), (99, "type 99")])
def test_unreadable_type_is_one_line_naming_it(tmp_path, type_id, name):
    pytest.importorskip("gguf")
    path = tmp_path / "odd.gguf"
    _tiny_gguf(path, type_id)
    with pytest.raises(NiahError) as err:
        read_gguf(path)
    msg = str(err.value)
    assert "\n" not in msg and f"quant type {name}," in msg and "blk.0.attn_q.weight" in msg


def test_not_a_gguf_and_bad_mode(tmp_path, gguf_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(NiahError, match="is not a GGUF file"):
        read_gguf(bad)
    with pytest.raises(NiahError, match="unknown --gguf-quant 'q5'"):
        read_gguf(gguf_path, quant="q5")


def test_cli_rejects_bad_rope_scaling_and_gguf_quant(tmp_path):

    res = invoke(["run", "--rope-scaling", "yarn:0.5", "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output == (
        "error: bad --rope-scaling 'yarn:0.5': use yarn:FACTOR or "
        "linear:FACTOR with FACTOR > 1 (e.g. yarn:4), none, or model\n"
    )
    res = invoke(["run", "--gguf-quant", "q5", "-o", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output == "error: unknown --gguf-quant 'q5': use one of auto, q8, q4, f16\n"
    assert list(tmp_path.iterdir()) == []
