#!/usr/bin/env python3
"""Compare niah's tokenizer for a GGUF with independent ones, token for token.

References: transformers' own GGUF tokenizer conversion (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`, which needs torch and the gguf package), and for SentencePiece vocabularies a
`sentencepiece` processor built from the file's pieces, scores and types. Texts: edge cases
and a long stretch of the default prose haystack. Prints one line per reference and exits 1 on
any difference.

    python3 scripts/check_gguf_tokenizer.py MODEL.gguf [MORE.gguf ...]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEXTS = [
    "Hello world",
    "The secret passkey is 4829173.",
    "  two  spaces\n\nnewlines\n\n\n end",
    "naïve café 東京 🤖 x\u2581y \t tab",
    "What is the secret passkey?\n\nThe secret passkey is",
    "a" * 50 + " " * 7 + "\n" * 3,
    "<start_of_turn>user\nhi<end_of_turn>\n",
]


def _texts(tokenizer) -> list[str]:
    from niah.haystack import Haystack

    hay = Haystack(tokenizer, source="prose", seed=7)
    hay.ensure(20000)
    return TEXTS + [tokenizer.decode(hay.ids.tolist())]


def _compare(name, ours, encode, texts) -> int:
    bad = 0
    for text in texts:
        a, b = ours.encode(text, add_special_tokens=False), encode(text)
        if a != b:
            bad += 1
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(
                f"  {name}: differs at token {i} of {len(a)}/{len(b)} in {text[:40]!r}: "
                f"{a[i : i + 5]} vs {b[i : i + 5]}"
            )
    total = sum(len(ours.encode(t, add_special_tokens=False)) for t in texts)
    print(f"{name}: {len(texts) - bad}/{len(texts)} texts identical ({total} tokens)")
    return bad


def check(path: str) -> int:
    from niah.gguf.header import parse_header
    from niah.gguf.tokenizer import build_tokenizer

    meta = parse_header(path).meta
    ours = build_tokenizer(meta)
    texts = _texts(ours)
    print(f"# {os.path.basename(path)} ({meta.get('tokenizer.ggml.model')})")
    bad = 0
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(
            os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path)
        )
        bad += _compare(
            "transformers GGUF", ours, lambda t: hf.encode(t, add_special_tokens=False), texts
        )
    except Exception as exc:  # noqa: BLE001 - report which reference could not run
        print(f"transformers GGUF: not run ({type(exc).__name__}: {str(exc)[:120]})")
    if meta.get("tokenizer.ggml.model") == "llama":
        from niah.gguf.tokenizer import sentencepiece_reference

        sp = sentencepiece_reference(meta)
        bad += _compare(
            "sentencepiece", ours, sp.encode, [t for t in texts if "<start_of" not in t]
        )
    return bad


if __name__ == "__main__":
    failures = sum(check(p) for p in sys.argv[1:])
    sys.exit(1 if failures else 0)
