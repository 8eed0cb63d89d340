"""Token-exact prompts: lengths, needle placement and depth, determinism, sources."""

import numpy as np
import pytest
from conftest import invoke, read_records

from niah.errors import NiahError
from niah.haystack import PromptBuilder, needle_value

LENGTHS = [97, 100, 128, 257, 512, 1000, 1024, 1999, 4096, 8000, 16384, 65536 + 7, 131072]


def _check_prompt(builder, tok, context, depth):
    value = needle_value(kind="number", seed=0, key=f"{context}-{depth}")
    p = builder.build(context=context, depth=depth, value=value)
    assert len(p.ids) == context
    needle = builder.needle_ids(value)
    assert np.array_equal(p.ids[p.needle_index : p.needle_index + len(needle)], needle)
    assert value in tok.decode(p.ids[p.needle_index : p.needle_index + len(needle)].tolist())
    return p


@pytest.mark.parametrize("context", LENGTHS)
def test_exact_length_gguf_tokenizer(gguf_tokenizer, context):
    builder = PromptBuilder(gguf_tokenizer)
    for depth in (0.0, 0.37, 1.0):
        p = _check_prompt(builder, gguf_tokenizer, context, depth)
    if context <= 16384:  # the decoded text re-encodes to exactly the same length
        text = gguf_tokenizer.decode(p.ids.tolist())
        assert len(gguf_tokenizer.encode(text, add_special_tokens=False)) == context


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """A Hugging Face tokenizer of another family (SentencePiece-style Metaspace BPE), trained
    here on the prose generator and loaded back with AutoTokenizer from a local folder."""
    from itertools import islice

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from niah.prose import prose_sentences

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        initial_alphabet=list("0123456789abcdef-"),
    )
    text = (
        list(islice(prose_sentences(seed=3), 3000))
        + ["The secret passkey is 0123456789 abcdef."] * 5
    )
    tok.train_from_iterator(text, trainer)
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] "
        "{{ m['content'] }} [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=template,
    )
    folder = tmp_path_factory.mktemp("hf-tokenizer")
    hf.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("context", [300, 333, 1024, 4097, 32768])
def test_exact_length_hf_tokenizer(hf_tokenizer, context):
    builder = PromptBuilder(hf_tokenizer)
    for depth in (0.0, 0.5, 0.9, 1.0):
        _check_prompt(builder, hf_tokenizer, context, depth)
    # one BOS only: the template writes it, the pieces are encoded without special tokens
    p = builder.build(context=context, depth=0.5, value="1234567")
    assert (
        int((p.ids == hf_tokenizer.bos_token_id).sum()) == 1
        and p.ids[0] == hf_tokenizer.bos_token_id
    )


def test_no_double_bos_gguf(gguf_tokenizer):
    p = PromptBuilder(gguf_tokenizer).build(context=512, depth=0.5, value="1234567")
    assert gguf_tokenizer.decode(p.ids[:3].tolist()).startswith("<|im_start|>system")
    assert int((p.ids == 1).sum()) == 3  # <|im_start|> opens system, user and assistant turns


def test_needle_depth_and_sentence_boundary(gguf_tokenizer):
    builder = PromptBuilder(gguf_tokenizer)
    for depth in np.linspace(0, 1, 11):
        p = builder.build(context=4096, depth=float(depth), value="7654321")
        assert abs(p.needle_depth - depth) < 0.03  # nearest boundary: sentences are ~20 tokens
        body_pos = p.needle_index - p.head_tokens
        assert body_pos in set(builder.haystack.starts.tolist())
        before = gguf_tokenizer.decode(p.ids[p.needle_index - 3 : p.needle_index].tolist())
        if 0 < body_pos:
            assert before.rstrip().endswith((".", "!", "?"))
    assert builder.build(context=4096, depth=0.0, value="1").needle_depth == 0.0


def test_determinism_by_seed(gguf_tokenizer):
    a = PromptBuilder(gguf_tokenizer, seed=5).build(context=2000, depth=0.3, value="1111111")
    b = PromptBuilder(gguf_tokenizer, seed=5).build(context=2000, depth=0.3, value="1111111")
    c = PromptBuilder(gguf_tokenizer, seed=6).build(context=2000, depth=0.3, value="1111111")
    assert np.array_equal(a.ids, b.ids) and not np.array_equal(a.ids, c.ids)
    assert needle_value(kind="number", seed=1, key="k") == needle_value(
        kind="number", seed=1, key="k"
    )
    assert needle_value(kind="number", seed=1, key="k") != needle_value(
        kind="number", seed=2, key="k"
    )
    assert len(needle_value(kind="number", seed=0, key="x")) == 7
    assert len(needle_value(kind="uuid", seed=0, key="x")) == 36
    assert " " in needle_value(kind="words", seed=0, key="x")


def test_prose_has_no_digits(gguf_tokenizer):
    builder = PromptBuilder(gguf_tokenizer)
    p = builder.build(context=8000, depth=0.5, value="1234567")
    body = np.concatenate(
        [
            p.ids[p.head_tokens : p.needle_index],
            p.ids[p.needle_index + p.needle_tokens : -len(builder.tail)],
        ]
    )
    assert not any(ch.isdigit() for ch in gguf_tokenizer.decode(body.tolist()))


def test_noise_and_file_sources(gguf_tokenizer, tmp_path):
    p = PromptBuilder(gguf_tokenizer, source="noise").build(context=3000, depth=0.5, value="42")
    assert len(p.ids) == 3000
    (tmp_path / "a.txt").write_text("Short text. Only two sentences!")
    (tmp_path / "b.txt").write_text("Another file? Yes.")
    p = PromptBuilder(gguf_tokenizer, source=str(tmp_path)).build(
        context=2048, depth=0.5, value="42"
    )
    assert len(p.ids) == 2048
    assert "Another file?" in gguf_tokenizer.decode(p.ids.tolist())


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: d / "missing.txt", "does not exist"),
        (lambda d: (d / "empty.txt").write_text("   ") and d / "empty.txt", "is empty"),
        (
            lambda d: (d / "bin.txt").write_bytes(b"\xff\xfe\x00bad") and d / "bin.txt",
            "is not UTF-8 text",
        ),
        (lambda d: (d / "sub").mkdir() or d / "sub", "has no .txt files"),
    ],
)
def test_bad_haystack_paths(gguf_tokenizer, tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(NiahError, match=message):
        PromptBuilder(gguf_tokenizer, source=str(path))


def test_too_short_context(gguf_tokenizer):
    builder = PromptBuilder(gguf_tokenizer)
    with pytest.raises(NiahError, match="too short"):
        builder.build(context=20, depth=0.5, value="1234567")


# --- placement on text without ASCII sentence ends (issue #11) ---------------------------------

HAYSTACKS = {
    "one-long-line": " ".join(f"token{i % 13} alpha beta gamma delta" for i in range(4000)),
    "log-lines": "\n".join(
        "INFO worker=alpha status=ok latency=fast shard=east" for _ in range(3000)
    ),
    "code": "\n".join(f"def f{i % 9}(x):\n    return x * {i % 5} + g(x)\n" for i in range(2000)),
    "cjk-sentences": "今天天气很好，我们去公园散步。公园里有很多人在跳舞！你喜欢跳舞吗？" * 400,
    "cjk-no-ends": "今天天气很好我们去公园散步公园里有很多人在跳舞" * 600,
    "japanese": "猫が庭で静かに眠っています。雨の日には窓の外を眺めます。" * 500,
}


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", list(HAYSTACKS))
@pytest.mark.parametrize("context", [300, 1024, 4096])
def test_placement_within_tolerance(gguf_tokenizer, tmp_path, name, context):
    builder = PromptBuilder(gguf_tokenizer, source=_write(tmp_path, name, HAYSTACKS[name]))
    for depth in np.linspace(0, 1, 21):
        p = _check_prompt(builder, gguf_tokenizer, context, float(depth))
        tol = builder.tolerance(p.body_tokens) / p.body_tokens
        assert abs(p.needle_depth - depth) <= tol + 1e-12, (depth, p.needle_depth, p.boundary)
        assert tol <= max(0.01, 1 / p.body_tokens)
        if p.boundary != "token":  # no character split on either side of the needle
            for ids in (p.ids[p.needle_index - 4 : p.needle_index],):
                assert not gguf_tokenizer.decode(ids.tolist()).endswith("\ufffd")
            end = p.needle_index + p.needle_tokens
            if end < p.head_tokens + p.body_tokens + p.needle_tokens:
                assert not gguf_tokenizer.decode(p.ids[end : end + 4].tolist()).startswith("\ufffd")


def test_placement_boundaries(gguf_tokenizer, hf_tokenizer, tmp_path):
    """Sentence ends where real text has them (CJK, line breaks), words in one long line,
    characters in CJK without punctuation; with two tokenizer families."""

    def kinds(tok, name):
        b = PromptBuilder(tok, source=_write(tmp_path, name, HAYSTACKS[name]))
        return {
            b.build(context=2048, depth=float(d), value="1234567").boundary
            for d in np.linspace(0.05, 0.95, 19)
        }

    assert kinds(gguf_tokenizer, "log-lines") == {"sentence"}
    assert "sentence" in kinds(gguf_tokenizer, "cjk-sentences")
    assert kinds(gguf_tokenizer, "one-long-line") == {"word"}
    assert kinds(hf_tokenizer, "one-long-line") == {"word"}
    assert kinds(gguf_tokenizer, "cjk-no-ends") <= {"char", "word"}


def test_segments():
    from niah.haystack import split_segments

    text = "A b. C d!\r\n\r\n\r\nE f\n  g h\u3002i j\uff1f k \u201cl.\u201d M"
    assert split_segments(text) == [
        ("\n", "A b."),
        (" ", "C d!"),
        ("\n\n", "E f"),
        ("\n  ", "g h\u3002"),
        ("", "i j\uff1f"),
        (" ", "k \u201cl.\u201d"),
        (" ", "M"),
    ]


# --- needle phrase and values already in the haystack (issue #11) -----------------------------


def test_haystack_with_needle_phrase_refused(gguf_tokenizer, tmp_path):
    path = _write(tmp_path, "planted", "Some text. The  SECRET passkey is 1234567. More text.")
    with pytest.raises(
        NiahError, match=r"already contains the needle phrase 'The secret passkey is'"
    ):
        PromptBuilder(gguf_tokenizer, source=path)
    PromptBuilder(gguf_tokenizer, source=path, needle="The magic number is {value}.")
    # prose is generated: the check runs on the text a prompt uses
    with pytest.raises(NiahError, match="already contains the needle phrase 'the old fisherman'"):
        PromptBuilder(gguf_tokenizer, needle="{value} the old fisherman").build(
            context=2048, depth=0.5, value="1234567"
        )


def test_value_occurs_and_redraw(gguf_tokenizer, tmp_path):
    from niah.values import draw_value

    first = needle_value(kind="number", seed=0, key="k")
    path = _write(tmp_path, "values", f"A line. The code {first} is here. Another line.")
    builder = PromptBuilder(gguf_tokenizer, source=path)
    assert builder.value_occurs(first, context=1024)
    reject = lambda v: builder.value_occurs(v, context=1024)  # noqa: E731
    redrawn = draw_value(kind="number", seed=0, key="k", reject=reject)
    assert redrawn != first and redrawn == draw_value(kind="number", seed=0, key="k", reject=reject)
    assert redrawn == needle_value(kind="number", seed=0, key="k#1")
    assert draw_value(kind="number", seed=0, key="k") == first
    prose = PromptBuilder(gguf_tokenizer, needle="The code is {value}.")
    assert prose.value_occurs("the old fisherman", context=1024)
    assert not prose.value_occurs("1234567", context=1024)
    with pytest.raises(NiahError, match="no number value avoids the haystack"):
        draw_value(kind="number", seed=0, key="k", reject=lambda v: True)


# --- through the CLI on the real model (issue #11) --------------------------------------------


def _cli(*args):
    return invoke(["run", *args], catch_exceptions=False)


def _records(out):
    folder = next(p for p in out.iterdir() if p.is_dir())
    return read_records(folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["one-long-line", "cjk-no-ends"])
def test_cli_depth_is_the_requested_depth(tmp_path, gguf_path, name):
    """Before the fix every needle in such a haystack sat at depth 0 under 'Depth 50%'."""
    hay = _write(tmp_path, name, HAYSTACKS[name])
    out = tmp_path / "res"
    result = _cli(
        "--haystack",
        hay,
        "--context",
        "1k",
        "--depth",
        "0.5",
        "--out",
        str(out),
        "-q",
        "--max-tokens",
        "12",
    )
    assert result.exit_code == 0, result.output
    (rec,) = _records(out)
    assert rec["context_tokens"] == 1024 and rec["depth"] == 0.5
    assert abs(rec["needle_depth"] - 0.5) <= 0.01
    assert rec["verdict"] in ("PASS", "FAIL", "NULL")


@pytest.mark.slow
def test_cli_haystack_with_the_needle_phrase_is_refused(tmp_path, gguf_path):
    hay = _write(tmp_path, "planted", "A quiet day. The secret passkey is 1234567. The end.")
    out = tmp_path / "res"
    result = _cli("--haystack", hay, "--context", "1k", "--depth", "0.5", "--out", str(out), "-q")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: haystack {hay!r} already contains the needle phrase 'The secret passkey is', so "
        "answers cannot be attributed: remove it from the haystack or choose another --needle\n"
    )
    assert result.stdout == ""
    assert not any(out.rglob("trials*.jsonl"))
