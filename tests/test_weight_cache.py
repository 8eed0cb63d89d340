"""The weight cache (niah.gguf.cache) and the MLX dequantizers (niah.gguf.dequant), on small
synthetic llama GGUFs with K-quant tensors written here (random blocks: the gguf package
dequantizes K-quants but cannot quantize to them). Every test points the cache into tmp_path.

Covered: miss then hit (bit-identical to a fresh conversion, no conversion on a hit), a
truncated or damaged entry rebuilt, a changed file making a new entry, two processes writing
the same entry at once, an unwritable cache, a native file staying out of the cache, the
progress callback, and each MLX dequantizer against gguf's numpy code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import invoke

gguf = pytest.importorskip("gguf")

from niah.gguf import cache as weight_cache
from niah.gguf import read as gguf_read
from niah.gguf.header import GGML_TYPES
from niah.gguf.read import read_gguf

VOCAB = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [chr(c) for c in range(97, 123)] + ["ab"]
TYPE_IDS = {name: tid for tid, (name, _, _) in GGML_TYPES.items()}
# where each type keeps its float16 scale(s): random bytes there could be inf/nan
SCALE_AT = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q5_0": (0,), "Q8_0": (0,)}
HIDDEN, FFN, LAYERS = 256, 512, 2


def _blocks(rng, type_name: str, rows: int, cols: int) -> np.ndarray:
    """Random GGML blocks of `type_name` for a rows x cols tensor, with sane scales."""
    _, per_block, size = GGML_TYPES[TYPE_IDS[type_name]]
    n = rows * cols // per_block
    b = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for at in SCALE_AT[type_name]:
        scale = rng.uniform(-0.02, 0.02, n).astype(np.float16)
        b[:, at : at + 2] = scale.view(np.uint8).reshape(n, 2)
    return b.reshape(rows, -1)


def write_kquant_gguf(path: Path, *, seed: int = 0, types=("Q4_K", "Q6_K", "Q5_0")) -> Path:
    """A 2-layer llama GGUF whose 2-D weights cycle through `types`, norms in F32."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in {
        "embedding_length": HIDDEN,
        "block_count": LAYERS,
        "feed_forward_length": FFN,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "context_length": 2048,
    }.items():
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(VOCAB)
    w.add_token_merges(["a b"])
    w.add_token_types([3, 3, 3] + [1] * (len(VOCAB) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    shapes = {"token_embd.weight": (len(VOCAB), HIDDEN), "output_norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        for part, shape in (
            ("attn_q", (HIDDEN, HIDDEN)),
            ("attn_k", (128, HIDDEN)),
            ("attn_v", (128, HIDDEN)),
            ("attn_output", (HIDDEN, HIDDEN)),
            ("ffn_gate", (FFN, HIDDEN)),
            ("ffn_up", (FFN, HIDDEN)),
            ("ffn_down", (HIDDEN, FFN)),
            ("attn_norm", (HIDDEN,)),
            ("ffn_norm", (HIDDEN,)),
        ):
            shapes[f"blk.{i}.{part}.weight"] = shape
    for k, (name, shape) in enumerate(shapes.items()):
        if len(shape) == 1:
            w.add_tensor(name, rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            kind = types[k % len(types)]
            w.add_tensor(
                name, _blocks(rng, kind, *shape), raw_dtype=gguf.GGMLQuantizationType[kind]
            )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NIAH_CACHE_DIR", str(folder))
    monkeypatch.delenv("NIAH_WEIGHT_CACHE", raising=False)
    return folder


@pytest.fixture
def kquant(tmp_path):
    return write_kquant_gguf(tmp_path / "tiny-kquant.gguf")


def _entries(cache_dir: Path) -> list[Path]:
    root = cache_dir / "weights"
    return sorted(p for p in root.iterdir()) if root.is_dir() else []


def _same(a, b) -> None:
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        x, y = a.tensors[name], b.tensors[name]
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert mx.array_equal(x, y).item(), name
    assert a.quantized == b.quantized


def _fresh(path, monkeypatch, quant="auto"):
    monkeypatch.setenv("NIAH_WEIGHT_CACHE", "0")
    raw = read_gguf(path, quant=quant)
    monkeypatch.delenv("NIAH_WEIGHT_CACHE")
    assert raw.cache == "off"
    return raw


@pytest.mark.parametrize("type_name", sorted(SCALE_AT) + ["F16"])
def test_mlx_dequantizer_equals_gguf_numpy(type_name):
    from gguf.quants import dequantize as numpy_dequantize

    from niah.gguf.dequant import dequantize

    rng = np.random.default_rng(7)
    rows, cols = 6, 512
    if type_name == "F16":
        raw = rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    else:
        raw = _blocks(rng, type_name, rows, cols)
    want = numpy_dequantize(raw, gguf.GGMLQuantizationType[type_name]).reshape(rows, cols)
    got = np.array(dequantize(raw, type_name, (rows, cols)))
    assert got.dtype == np.float32 and np.array_equal(got, want)


def test_miss_then_hit_is_bit_identical_to_a_fresh_conversion(kquant, cache_dir, monkeypatch):
    fresh = _fresh(kquant, monkeypatch)
    first = read_gguf(kquant)
    assert first.cache == "stored" and len(_entries(cache_dir)) == 1
    _same(first, fresh)

    def no_conversion(*a, **k):
        raise AssertionError("a cache hit must not convert")

    monkeypatch.setattr(gguf_read, "_convert", no_conversion)
    second = read_gguf(kquant)
    assert second.cache == "hit" and second.weights == "q8/g64" and second.digest == fresh.digest
    _same(second, fresh)
    assert second.meta["general.architecture"] == fresh.meta["general.architecture"]


def test_loaded_model_from_a_hit_equals_a_fresh_load(kquant, cache_dir, monkeypatch):
    from mlx.utils import tree_flatten

    from niah.gguf import load_gguf_model

    monkeypatch.setenv("NIAH_WEIGHT_CACHE", "0")
    fresh, _, info = load_gguf_model(kquant)
    assert info.weight_cache == "off"
    monkeypatch.delenv("NIAH_WEIGHT_CACHE")
    assert load_gguf_model(kquant)[2].weight_cache == "stored"
    model, _, info = load_gguf_model(kquant)
    assert info.weight_cache == "hit"
    want = dict(tree_flatten(fresh.parameters()))
    got = dict(tree_flatten(model.parameters()))
    assert sorted(want) == sorted(got)
    assert all(mx.array_equal(want[k], got[k]).item() for k in want)


@pytest.mark.parametrize(
    "damage", ["truncate weights", "drop manifest", "garble manifest", "manifest of another key"]
)
def test_damaged_entry_is_rebuilt_never_used(kquant, cache_dir, monkeypatch, damage):
    fresh = _fresh(kquant, monkeypatch)
    read_gguf(kquant)
    (entry,) = _entries(cache_dir)
    data, manifest = entry / weight_cache.WEIGHTS_FILE, entry / weight_cache.MANIFEST
    if damage == "truncate weights":
        with open(data, "r+b") as fh:
            fh.truncate(data.stat().st_size // 2)
    elif damage == "drop manifest":
        manifest.unlink()
    elif damage == "garble manifest":
        manifest.write_text(manifest.read_text()[:40])
    else:
        m = json.loads(manifest.read_text())
        m["key"] = "0" * 32
        manifest.write_text(json.dumps(m))
    again = read_gguf(kquant)
    assert again.cache == "rebuilt"
    _same(again, fresh)
    assert read_gguf(kquant).cache == "hit" and len(_entries(cache_dir)) == 1


def test_corrupt_bytes_of_the_same_size_are_caught_by_the_digest(kquant, cache_dir, monkeypatch):
    """A flipped byte keeps the size; the per-file sha256 (re-hashed: the write changed the
    file's mtime and ctime) rejects the entry."""
    fresh = _fresh(kquant, monkeypatch)
    read_gguf(kquant)
    (entry,) = _entries(cache_dir)
    data = entry / weight_cache.WEIGHTS_FILE
    with open(data, "r+b") as fh:
        fh.seek(data.stat().st_size - 10)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    again = read_gguf(kquant)
    assert again.cache == "rebuilt"
    _same(again, fresh)


def test_changed_file_gets_a_new_entry(kquant, cache_dir):
    first = read_gguf(kquant)
    write_kquant_gguf(kquant, seed=1)  # same layout, other weights
    second = read_gguf(kquant)
    assert second.cache == "stored" and second.digest != first.digest
    assert len(_entries(cache_dir)) == 2
    a, b = first.tensors["blk.0.attn_q.weight"], second.tensors["blk.0.attn_q.weight"]
    assert not mx.array_equal(a, b).item()


def test_another_mode_is_another_entry(kquant, cache_dir):
    assert read_gguf(kquant, quant="q4").cache == "stored"
    assert read_gguf(kquant, quant="f16").cache == "stored"
    assert read_gguf(kquant, quant="q4").cache == "hit"
    assert len(_entries(cache_dir)) == 2


def test_native_file_stays_out_unless_converted(tmp_path, cache_dir, monkeypatch):
    native = write_kquant_gguf(tmp_path / "native.gguf", types=("Q8_0",))
    raw = read_gguf(native)
    assert raw.cache == "" and raw.weights == "native" and not _entries(cache_dir)
    fresh = _fresh(native, monkeypatch, quant="q4")
    assert read_gguf(native, quant="q4").cache == "stored"
    hit = read_gguf(native, quant="q4")
    assert hit.cache == "hit"
    _same(hit, fresh)


def test_unwritable_cache_folder_still_loads(kquant, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NIAH_CACHE_DIR", str(blocker / "cache"))
    raw = read_gguf(kquant)
    assert raw.cache == "unwritable" and raw.tensors


def test_progress_reports_every_tensor_on_a_conversion_only(kquant, cache_dir):
    seen = []
    read_gguf(kquant, on_progress=lambda done, total, what: seen.append((done, total, what)))
    total = len(gguf_read.parse_header(kquant).tensors)
    assert [d for d, _, _ in seen] == list(range(1, total + 1))
    assert {(t, w) for _, t, w in seen} == {(total, "converting weights")}
    seen.clear()
    assert read_gguf(kquant, on_progress=lambda *a: seen.append(a)).cache == "hit" and not seen


_WRITER = """
import sys, time
from pathlib import Path
from niah.gguf import cache
from niah.gguf.read import read_gguf

store, sync = cache.store, Path(sys.argv[2])
def store_together(*a, **k):  # both processes have converted: store at the same moment
    (sync / sys.argv[3]).touch()
    deadline = time.time() + 60
    while len(list(sync.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    result = store(*a, **k)
    print("store:", result)
    return result
cache.store = store_together
raw = read_gguf(sys.argv[1])
print("cache:", raw.cache, "tensors:", len(raw.tensors))
"""


def test_two_processes_writing_one_entry(kquant, cache_dir, tmp_path, monkeypatch):
    sync = tmp_path / "sync"
    sync.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(kquant), str(sync), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    stores = sorted(
        line.split()[1] for out, _ in outs for line in out.splitlines() if line.startswith("store:")
    )
    assert stores == ["lost", "stored"]
    assert all("cache: stored" in out for out, _ in outs)
    (entry,) = _entries(cache_dir)  # one entry, no temporary folder left
    assert entry.name != "" and not entry.name.startswith(".")
    fresh = _fresh(kquant, monkeypatch)
    hit = read_gguf(kquant)
    assert hit.cache == "hit"
    _same(hit, fresh)


def test_cache_info_and_clear_touch_only_niah_entries(kquant, cache_dir):
    read_gguf(kquant)
    (cache_dir / "unrelated.txt").write_text("not niah's")
    info = invoke(["cache", "info"])
    assert info.exit_code == 0 and str(cache_dir) in info.output and "(0.0 MiB)" not in info.output
    cleared = invoke(["cache", "clear"])
    assert cleared.exit_code == 0 and "freed" in cleared.output
    assert not _entries(cache_dir) and (cache_dir / "unrelated.txt").is_file()
    assert "(0.0 MiB)" in invoke(["cache", "info"]).output
    assert read_gguf(kquant).cache == "stored"


def test_progress_notes_wait_then_throttle_then_finish():
    from niah.model import progress_notes

    now, lines = [0.0], []
    cb = progress_notes(lines.append, quiet_s=2.0, every_s=5.0, clock=lambda: now[0])
    for t, done in ((0.5, 1), (1.9, 2), (2.1, 3), (4.0, 4), (7.2, 5), (7.3, 6)):
        now[0] = t
        cb(done, 6, "converting weights")
    assert lines == [
        "converting weights: 3/6 (2 s)",
        "converting weights: 5/6 (7 s)",
        "converting weights: 6/6 (7 s)",
    ]
    quick, now[0] = [], 0.0
    cb = progress_notes(quick.append, clock=lambda: now[0])
    cb(1, 1, "converting weights")
    assert quick == []  # a load shorter than quiet_s prints nothing


def test_a_run_shows_conversion_progress_through_its_notes(kquant, cache_dir, monkeypatch):
    """runner -> ModelSession -> load_gguf_model -> read_gguf carries on_progress; here with
    no quiet period, so the tiny model's conversion prints."""
    from niah import model
    from niah.config import RunConfig
    from niah.run import sweep as runner

    monkeypatch.setattr(
        model,
        "progress_notes",
        lambda note: lambda done, total, what: note(f"{what}: {done}/{total}"),
    )

    class Notes(runner.Progress):
        def __init__(self):
            self.lines = []

        def note(self, text):
            self.lines.append(text)

    notes = Notes()
    session = runner._open_session(RunConfig(model=str(kquant)), sharded=False, progress=notes)
    total = len(gguf_read.parse_header(kquant).tensors)
    assert notes.lines[-1] == f"converting weights: {total}/{total}"
    assert session.info.weight_cache == "stored"
