"""`--thinking on|off|model` through `niah run`: enable_thinking reaches a chat template that reads
it, no answer prefix and a reasoning-sized answer budget when on, the text after the reasoning
block scored; a template that does not read the flag is refused.

The thinking model is a copy of the embedded SmolLM2 GGUF whose chat template is replaced by one
that reads enable_thinking (off: an empty reasoning block, as Qwen3's; on: the block opened in
the prompt, as DeepSeek-R1's; unset: neither). Generation is replaced by canned answers, so the
prompts and the scoring are what is checked, not the small model's reasoning."""

import functools
import importlib
import inspect
import json
from pathlib import Path

import pytest
from conftest import invoke, read_records

import niah
from niah.haystack import PromptBuilder
from niah.scoring import FAIL, NULL, PASS, judge

THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% elif enable_thinking is defined and enable_thinking %}<think>\n{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def thinking_gguf(gguf_path, tmp_path_factory):
    """The embedded model with THINKING_TEMPLATE as its tokenizer.chat_template."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    out = tmp_path_factory.mktemp("thinking") / "smollm2-thinking.gguf"
    reader = gguf.GGUFReader(gguf_path)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    writer = gguf.GGUFWriter(str(out), arch=arch.contents(), endianess=reader.endianess)
    template = {
        gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(
            gguf.GGUFValueType.STRING, THINKING_TEMPLATE
        )
    }
    copy_with_new_metadata(reader, writer, template, [])
    return str(out)


def _wire(monkeypatch, thinking: str) -> None:
    """The runner builds its PromptBuilder from the config's fields; until it passes
    thinking=config.thinking too (one keyword, a merge step in niah/runner.py or
    niah/run/sweep.py, which this branch does not own), the test passes it the same way.
    Once the runner passes it, nothing is patched and the runner's own wiring is tested."""
    package = Path(niah.__file__).parent
    for name in ("niah.run.sweep", "niah.runner"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if package in Path(module.__file__).parents and hasattr(module, "PromptBuilder"):
            if "thinking=config.thinking" not in inspect.getsource(module):
                monkeypatch.setattr(
                    module, "PromptBuilder", functools.partial(PromptBuilder, thinking=thinking)
                )
            return


def _canned(monkeypatch, answer: str) -> list:
    """Every generation answers `answer` with the trial's needle value (read off the prompt)
    filled in for {value}; returns the list each prompt's token ids and budget go to."""
    import re

    from niah.generation import Generation
    from niah.model import ModelSession

    seen = []

    def generate(self, ids, *, cache, reuse=0, prefill_step=2048, max_tokens=32, on_prefill=None):
        ids = [int(i) for i in ids]
        seen.append((ids, max_tokens))
        value = re.search(r"The secret passkey is (\d+)", self.tokenizer.decode(ids)).group(1)
        return Generation(
            response=answer.format(value=value),
            tokens=3,
            prefilled=len(ids) - reuse,
            reused=reuse,
            prefill_s=0.01,
            ttft_s=0.01,
            decode_s=0.01,
            decode_tps=None,
            peak_memory_bytes=0,
            kv_cache_bytes=0,
            finish="eos",
        )

    monkeypatch.setattr(ModelSession, "generate", generate)
    return seen


def _run(tmp_path, model: str, *extra: str):
    out = tmp_path / "res"
    result = invoke(
        [
            "run",
            "--model",
            model,
            "--context",
            "512",
            "--depth",
            "0.5",
            "--out",
            str(out),
            "-q",
            "--warm-up",
            "off",
            *extra,
        ]
    )
    records, config = [], None
    if out.exists() and any(out.iterdir()):
        folder = next(out.iterdir())
        records = read_records(folder)
        config = json.loads((folder / "config.json").read_text())
    return result, records, config


@pytest.mark.slow
def test_thinking_modes_change_the_prompt_the_prefix_and_the_budget(
    thinking_gguf, tmp_path, monkeypatch
):
    from niah.model import ModelSession

    tokenizer = ModelSession(thinking_gguf).tokenizer
    texts, configs = {}, {}
    for mode in ("model", "on", "off"):
        _wire(monkeypatch, mode)
        seen = _canned(monkeypatch, "It is 1234567.")
        result, records, config = _run(tmp_path / mode, thinking_gguf, "--thinking", mode)
        assert result.exit_code == 0, result.output
        ((ids, budget),) = seen
        texts[mode], configs[mode] = tokenizer.decode(ids), config
        assert config["thinking"] == mode and budget == config["max_tokens"]
        configs[mode]["hash"] = records[0]["config_hash"]
    tail = {mode: text[text.rindex("<|im_start|>assistant\n") :] for mode, text in texts.items()}
    prefix = "The secret passkey is"
    assert tail["model"] == "<|im_start|>assistant\n" + prefix  # the template's default
    assert tail["off"] == "<|im_start|>assistant\n<think>\n\n</think>\n\n" + prefix
    assert tail["on"] == "<|im_start|>assistant\n<think>\n"  # no answer prefix
    assert configs["on"]["answer_prefix"] == ""
    assert configs["on"]["max_tokens"] == configs["model"]["max_tokens"] + 1024
    assert configs["off"]["max_tokens"] == configs["model"]["max_tokens"]
    assert len({c["hash"] for c in configs.values()}) == 3  # thinking is in the config hash


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer,verdict",
    [
        ("the passkey is {value}, so I answer that.\n</think>\n\nThe passkey is {value}.", PASS),
        ("the passkey is {value}, so I", NULL),  # cut off while reasoning
        ("the passkey is {value}.\n</think>\n\nI could not find it.", FAIL),  # quoted, not answered
    ],
)
def test_thinking_on_scores_the_text_after_the_reasoning(
    thinking_gguf, tmp_path, monkeypatch, answer, verdict
):
    """The prompt opens the reasoning block (<think> at its end), so the response is its
    continuation: the value quoted before </think> is reasoning, the text after it the answer."""
    _wire(monkeypatch, "on")
    _canned(monkeypatch, answer)
    result, records, _ = _run(tmp_path, thinking_gguf, "--thinking", "on")
    assert result.exit_code == 0, result.output
    assert records[0]["verdict"] == verdict, records[0]


def test_unclosed_reasoning_does_not_pass_on_a_quoted_value():
    """A reasoning block cut by the budget: the value it quotes is not an answer (it passed
    before: the whole text was scored when nothing stood before the <think>)."""
    assert judge("<think>the passkey is 1234567", "1234567").verdict == NULL
    assert judge("<think>the passkey is 1234567</think>It is 1234567.", "1234567").verdict == PASS
    assert judge("It is 1234567. <think>or maybe 7654321", "1234567").verdict == PASS


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["on", "off"])
def test_thinking_refused_for_a_template_without_the_flag(tmp_path, monkeypatch, mode):
    """The embedded model's template does not read enable_thinking: --thinking on/off would
    record a mode its prompts do not have, so the run is refused in one line."""
    _wire(monkeypatch, mode)
    seen = _canned(monkeypatch, "1234567")
    result, records, _ = _run(tmp_path, "default", "--thinking", mode)
    assert result.exit_code == 2, result.output
    assert (
        f"error: --thinking {mode} sets the chat template's enable_thinking, and this model "
        "has a chat template that does not read it: use --thinking model"
    ) in result.output
    assert not seen and not records


def test_thinking_option_checks():
    from niah.config import RunConfig
    from niah.errors import NiahError

    with pytest.raises(NiahError, match="unknown --thinking 'maybe'"):
        RunConfig(model="m", thinking="maybe")
    with pytest.raises(NiahError, match="--answer-prefix cannot be combined with --thinking on"):
        RunConfig(model="m", thinking="on", answer_prefix="The passkey is")
    assert RunConfig(model="m").hash() == RunConfig(model="m", thinking="model").hash()
    assert RunConfig(model="m").hash() != RunConfig(model="m", thinking="off").hash()


def test_answer_prefix_with_thinking_on_is_refused_by_the_cli(tmp_path):
    result = invoke(
        ["run", "--thinking", "on", "--answer-prefix", "It is", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "--answer-prefix cannot be combined with --thinking on" in result.output
