"""niah's trial against mlx-lm's own generation, side by side in one process.

Same model object, same prompt (a niah prompt of each context), same prefill step and a fresh
cache each time. niah's side is a trial as the sweep runs it: `ModelSession.generate` inside
niah's SDPA patch (`--route`, default auto). mlx-lm's side is `mlx_lm.stream_generate`, whose
last response carries the prompt and generation tokens/s that `mlx_lm.generate --verbose`
prints. The two alternate (niah first in odd rounds, mlx-lm first in even ones); the first
round is a warm-up and is printed apart. Printed per context: whether the generated tokens are
identical, and the median ratio niah / mlx-lm of prefill tokens/s and of decode tokens/s.

    python benchmarks/vs_mlx_lm.py [--model X.gguf] [--contexts 32k,128k] [--rounds 4]
        [--max-tokens 32] [--no-eos] [--self]
    --no-eos: a fixed decode length on both sides; --self: mlx-lm in niah's place too (the
    noise floor of the ratios on this machine)
    python benchmarks/vs_mlx_lm.py --quick     # CI on the CPU: 256 and 1K tokens, 2 rounds

Exits 1 when the tokens differ (the ratios are printed, not gated).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mlx_lm(session, ids, *, step: int, max_tokens: int):
    """mlx-lm's own generation: (tokens, prompt tokens/s, generation tokens/s)."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.models.cache import make_prompt_cache

    from niah.generation import free_memory

    free_memory()
    cache = make_prompt_cache(session.model)
    tokens, last = [], None
    for last in stream_generate(
        session.model,
        session.wrapper,
        mx.array(ids),
        prompt_cache=cache,
        max_tokens=max_tokens,
        prefill_step_size=step,
    ):
        tokens.append(int(last.token))
    return tokens, last.prompt_tps, (last.generation_tps if len(tokens) > 1 else None)


def _niah(session, ids, *, step: int, max_tokens: int, route: str):
    """niah's trial: (tokens, prefill tokens/s, decode tokens/s, route summary)."""
    from niah.sdpa import patched

    with patched(route) as state:
        gen = session.generate(
            ids, cache=session.make_cache(), prefill_step=step, max_tokens=max_tokens
        )
    return list(gen.token_ids), gen.prefilled / gen.prefill_s, gen.decode_tps, state.summary(), gen


def _header(args) -> None:
    from importlib.metadata import version

    import mlx.core as mx

    from niah.model import device_description

    commit = os.environ.get("NIAH_COMMIT")  # set where the tree has no .git (the GPU host)
    try:
        commit = (
            commit
            or subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        commit = "unknown"
    print(f"# command: python benchmarks/vs_mlx_lm.py {' '.join(sys.argv[1:])}")
    print(
        f"# commit {commit}; device {device_description()}; {platform.machine()}; "
        f"mlx {mx.__version__}; mlx-lm {version('mlx-lm')}; "
        f"date {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    )
    print(
        f"# model {args.model or 'embedded default'}; prefill step {args.step}; "
        f"max tokens {args.max_tokens}{' (end-of-sequence ignored)' if args.no_eos else ''}; "
        f"rounds {args.rounds} (first is warm-up); "
        f"route {args.route}"
        + ("; --self: mlx-lm on both sides (noise floor)" if args.self else "")
    )


def _context_rows(session, builder, context: int, args) -> bool:
    ids = builder.build(context=context, depth=0.5, value="4817263").ids.tolist()
    kw = dict(step=args.step, max_tokens=args.max_tokens)
    pre, dec, same = [], [], True
    for r in range(args.rounds):
        order = ("niah", "mlx") if r % 2 == 0 else ("mlx", "niah")
        got = {}
        for side in order:
            if side == "niah" and args.self:  # the noise floor: mlx-lm in niah's place
                got[side] = (*_mlx_lm(session, ids, **kw), "mlx-lm itself", None)
            else:
                got[side] = (
                    _niah(session, ids, route=args.route, **kw)
                    if side == "niah"
                    else _mlx_lm(session, ids, **kw)
                )
        n_tok, n_pre, n_dec, route, _ = got["niah"]
        m_tok, m_pre, m_dec = got["mlx"]
        equal = n_tok == m_tok
        same &= equal
        tag = "warm-up" if r == 0 else f"round {r}"
        print(
            f"{context:>7} {tag:>8}: niah prefill {n_pre:9.1f} tok/s decode "
            f"{(n_dec or 0):7.1f} tok/s | mlx-lm prefill {m_pre:9.1f} decode "
            f"{(m_dec or 0):7.1f} | tokens {'identical' if equal else 'DIFFER'} | route {route}",
            flush=True,
        )
        if r:
            pre.append(n_pre / m_pre)
            if n_dec and m_dec:
                dec.append(n_dec / m_dec)
    if pre:
        print(
            f"{context:>7}   median: prefill ratio {statistics.median(pre):.3f}, decode ratio "
            + (f"{statistics.median(dec):.3f}" if dec else "-")
            + f", tokens {'identical' if same else 'DIFFER'}",
            flush=True,
        )
    return same


def main(argv=None) -> int:
    from niah.blas import ensure_fast_blas

    ensure_fast_blas()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--contexts", default="32k,128k")
    ap.add_argument("--step", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--route", default="auto")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--self",
        action="store_true",
        help="mlx-lm against itself on both sides: the noise floor of the ratios",
    )
    ap.add_argument(
        "--no-eos",
        action="store_true",
        help="decode exactly --max-tokens tokens on both sides (the shared tokenizer wrapper's "
        "end-of-sequence ids cleared), so decode tokens/s is measured over the same count",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.contexts, args.rounds = "256,1k", 2
    from niah.config import parse_context
    from niah.haystack import PromptBuilder
    from niah.model import ModelSession

    _header(args)
    session = ModelSession(args.model)
    if args.no_eos:  # both sides read the same wrapper: they still decode alike
        session.wrapper.eos_token_ids = set()
    builder = PromptBuilder(session.tokenizer)
    ok = all(
        [_context_rows(session, builder, parse_context(c), args) for c in args.contexts.split(",")]
    )
    print("tokens identical in every round" if ok else "TOKENS DIFFER: see the rows above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
