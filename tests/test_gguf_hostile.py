"""Damaged or misused GGUFs through the CLI (issue 20): a type field that disagrees with the
data, sizes that no type fits, a truncated file, a mislabelled architecture, --gguf-quant on an
MLX folder, and `niah convert` onto paths it cannot write. Each is one line and exit 2, with
nothing partial left behind. The GGUFs are made or patched here, in tmp_path."""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import invoke

F32, Q4_0, Q4_K, IQ2_XXS = 0, 2, 12, 16
VOCAB = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(97, 123)] + ["ab"]


def _one_line_error(res, *words) -> str:
    """The output is one error line (exit 2, no traceback) holding every word."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert len(lines[0]) < 400, lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _patch_type(src: str, dst: Path, tensor: str, type_id: int) -> Path:
    """Copy `src` to `dst` with `tensor`'s type field in the tensor table set to `type_id`."""
    data = bytearray(Path(src).read_bytes())
    key = tensor.encode()
    pos = data.rfind(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    (n_dims,) = struct.unpack_from("<I", data, pos)
    struct.pack_into("<I", data, pos + 4 + 8 * n_dims, type_id)
    dst.write_bytes(bytes(data))
    return dst


def _tiny_gguf(path: Path, *, header_arch: str = "llama", merges=("a b",)) -> Path:
    """A 2-layer llama-shaped GGUF (random F32 weights) whose header says `header_arch`."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return mx.array(rng.normal(0, 0.05, shape).astype(np.float32))

    tensors = {"token_embd.weight": w(len(VOCAB), 64), "output_norm.weight": w(64) + 1}
    for i in range(2):
        tensors.update(
            {
                f"blk.{i}.attn_norm.weight": w(64) + 1,
                f"blk.{i}.ffn_norm.weight": w(64) + 1,
                f"blk.{i}.attn_q.weight": w(64, 64),
                f"blk.{i}.attn_k.weight": w(32, 64),
                f"blk.{i}.attn_v.weight": w(32, 64),
                f"blk.{i}.attn_output.weight": w(64, 64),
                f"blk.{i}.ffn_gate.weight": w(96, 64),
                f"blk.{i}.ffn_up.weight": w(96, 64),
                f"blk.{i}.ffn_down.weight": w(64, 96),
            }
        )
    a, u32 = header_arch, (lambda v: mx.array(v, dtype=mx.uint32))
    meta = {
        "general.architecture": a,
        "general.name": "tiny",
        f"{a}.embedding_length": u32(64),
        f"{a}.block_count": u32(2),
        f"{a}.feed_forward_length": u32(96),
        f"{a}.attention.head_count": u32(4),
        f"{a}.attention.head_count_kv": u32(2),
        f"{a}.context_length": u32(2048),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": VOCAB,
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.token_type": mx.array([3, 3, 3] + [1] * (len(VOCAB) - 3), dtype=mx.int32),
        "tokenizer.ggml.bos_token_id": u32(1),
        "tokenizer.ggml.eos_token_id": u32(2),
        "tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    }
    mx.save_gguf(str(path), tensors, meta)
    return path


def _commands(model: Path, tmp_path: Path):
    return {
        "run": ["run", "-m", str(model), "-c", "256", "-d", "0.5", "-o", str(tmp_path / "res")],
        "convert": ["convert", str(model), str(tmp_path / "conv")],
        "doctor": ["doctor", "-m", str(model), "-c", "1k"],
    }


def _nothing_left(tmp_path: Path) -> None:
    assert not (tmp_path / "conv").exists()
    res = tmp_path / "res"
    assert not res.exists() or not any(res.rglob("trials*.jsonl"))


@pytest.mark.parametrize("type_id,name", [(F32, "F32"), (Q4_0, "Q4_0")])
@pytest.mark.parametrize("command", ["run", "convert", "doctor"])
def test_type_field_patched_from_q4_1_is_one_line_naming_the_tensor(
    gguf_path, tmp_path, command, type_id, name
):
    """Issue 20 item 7: same file size, the type says F32 (larger) or Q4_0 (smaller) where
    the data is Q4_1."""
    bad = _patch_type(gguf_path, tmp_path / "patched.gguf", "blk.0.attn_q.weight", type_id)
    res = invoke(_commands(bad, tmp_path)[command])
    _one_line_error(res, "'blk.0.attn_q.weight'", name, "does not match")
    _nothing_left(tmp_path)


@pytest.mark.parametrize("type_id,name", [(Q4_K, "Q4_K"), (IQ2_XXS, "IQ2_XXS")])
@pytest.mark.parametrize("command", ["run", "convert", "doctor"])
def test_sizes_no_type_fits_are_one_line_not_a_reshape_error(
    gguf_path, tmp_path, command, type_id, name
):
    bad = _patch_type(gguf_path, tmp_path / "patched.gguf", "blk.0.attn_q.weight", type_id)
    res = invoke(_commands(bad, tmp_path)[command])
    line = _one_line_error(res, "'blk.0.attn_q.weight'", name)
    assert "reshape" not in line
    _nothing_left(tmp_path)


@pytest.mark.parametrize("command", ["run", "convert"])
def test_truncated_gguf_says_truncated_not_install_gguf(gguf_path, tmp_path, command):
    data = Path(gguf_path).read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[: len(data) // 2])
    line = _one_line_error(invoke(_commands(half, tmp_path)[command]), "truncated")
    assert "pip install" not in line
    _nothing_left(tmp_path)


def test_mislabelled_architecture_is_one_short_line(tmp_path):
    """qwen2 in the header, llama tensors (no Q/K/V biases): mlx-lm's 5 KB list stays in the
    exception's cause; the line names the count and one parameter."""
    bad = _tiny_gguf(tmp_path / "mislabelled.gguf", header_arch="qwen2")
    line = _one_line_error(invoke(_commands(bad, tmp_path)["run"]), "qwen2", "missing")
    assert "model.layers.0.self_attn." in line
    _nothing_left(tmp_path)


def test_merge_outside_the_vocabulary_is_one_line(tmp_path):
    bad = _tiny_gguf(tmp_path / "badmerge.gguf", merges=("a b", "x yz"))
    _one_line_error(invoke(_commands(bad, tmp_path)["convert"]), "tokenizer", "yz")
    _nothing_left(tmp_path)


def test_gguf_quant_with_an_mlx_folder_is_refused_before_loading(tmp_path):
    """Issue 20 item 6: --gguf-quant would be ignored for a folder yet change the hash."""
    folder = tmp_path / "mlx-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    res = invoke(
        [
            "run",
            "-m",
            str(folder),
            "--gguf-quant",
            "q4",
            "-c",
            "256",
            "-d",
            "0.5",
            "-o",
            str(tmp_path / "res"),
        ]
    )
    _one_line_error(res, "--gguf-quant q4", "GGUF files only")
    assert not (tmp_path / "res").exists()
    res = invoke(
        ["run", "-m", "org/some-model", "--gguf-quant", "f16", "-o", str(tmp_path / "res")]
    )
    _one_line_error(res, "--gguf-quant f16", "hub model")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_convert_onto_proc_is_one_line(tmp_path):
    gguf = _tiny_gguf(tmp_path / "tiny.gguf")
    _one_line_error(invoke(["convert", str(gguf), "/proc/niah-x"]), "/proc/niah-x")


def test_convert_under_a_file_is_one_line(tmp_path):
    gguf = _tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "afile").write_text("x")
    _one_line_error(invoke(["convert", str(gguf), str(tmp_path / "afile" / "out")]), "afile")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("exists", [False, True])
def test_convert_onto_a_full_disk_leaves_nothing(tmp_path, monkeypatch, exists):
    """The safetensors write fails part-way (as on a full disk): one line, no partial file,
    and a folder this call created is gone again (an existing empty one stays empty)."""
    gguf = _tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "new" / "model"
    if exists:
        out.mkdir(parents=True)

    def full_disk(path, arrays, metadata=None):
        Path(path).write_bytes(b"\0" * (1 << 20))
        raise RuntimeError("[write] Unable to write 1048576 bytes to file.")

    monkeypatch.setattr(mx, "save_safetensors", full_disk)
    _one_line_error(invoke(["convert", str(gguf), str(out)]), "Unable to write")
    if exists:
        assert list(out.iterdir()) == []
    else:
        assert not (tmp_path / "new").exists()


def test_tiny_gguf_converts(tmp_path):
    """The helper's GGUF is valid: convert writes a complete folder and no temporary one."""
    gguf = _tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "out"
    res = invoke(["convert", str(gguf), str(out)])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "config.json" in names
    assert not [n for n in names if n.startswith(".")]
    shutil.rmtree(out)


@pytest.mark.parametrize("length", [2**40, 2**63, 2**64 - 1])
@pytest.mark.parametrize("where", ["key", "vocabulary"])
def test_a_string_length_past_the_file_says_truncated(tmp_path, length, where):
    """A damaged length field (a key or a vocabulary entry claiming more bytes than the file
    has) is the one-line truncated error, not an OverflowError or a MemoryError from reading
    that many bytes."""
    from niah.errors import NiahError
    from niah.gguf.header import parse_header

    def s(b: bytes, n: int | None = None) -> bytes:
        return struct.pack("<Q", len(b) if n is None else n) + b

    key = b"tokenizer.ggml.tokens"
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    body += s(key, length) if where == "key" else s(key)
    body += struct.pack("<IIQ", 9, 8, 2) + s(b"ok") + s(b"abc", length)
    path = tmp_path / "damaged.gguf"
    path.write_bytes(body)
    with pytest.raises(NiahError, match="is truncated"):
        parse_header(path)
