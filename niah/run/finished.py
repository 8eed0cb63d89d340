"""A rerun of a finished sweep, answered from its run folder without loading the model.

When the folder a configuration names already holds a finished record of every cell this call
asks for, the sweep would run nothing: loading the model (and importing mlx-lm) would buy only
the wait. `finished_run` computes the configuration's hash the way a loaded session does
(niah.run.sweep._prepare): the model file's digest (cached by niah.digest_store), the haystack,
the backend, the compute dtype the session would pick and the SDPA settings as resolved. Only a
folder whose config.json holds exactly that hash, and every asked cell finished, is answered
from disk; a cell left to run returns None and the sweep loads. A folder holding another
hash (another model file, backend, library or niah version) is refused here with the line the
loaded run would give, not after a load spent for nothing. Hub models always load (their
files are resolved by the load itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import store
from ..config import RunConfig
from .grid import build_grid


@dataclass(frozen=True)
class Finished:
    """A run folder that already answers this call."""

    folder: Path
    config_hash: str
    identity: dict
    cells: int  # finished cells this call asked for


def sdpa_identity(config: RunConfig, chunks) -> dict:
    """The SDPA settings a run's identity holds: the route asked, and the chunking as
    niah.sdpa.resolve_config resolves it (environment variables included)."""
    return {
        "route": config.sdpa,
        "threshold": chunks.threshold,
        "chunk_size": chunks.chunk_size,  # and the work per Metal command buffer:
        "flop_budget": chunks.flop_budget,  # it sets Metal's chunks and query blocks
        "q_block": chunks.q_block,  # query rows per call of the q-split route and fallback
    }


def finished_run(config: RunConfig, *, folder: Path | None) -> Finished | None:
    """The folder holding every asked cell of `config` finished, under the hash a loaded
    session would compute; None when there is none (the sweep then loads the model)."""
    from ..backend import backend
    from ..identity import file_digest, run_identity
    from ..model import compute_dtype_for, resolve_model
    from ..sdpa.dispatch import resolve_config

    chunks = resolve_config(threshold=config.chunk_threshold, chunk_size=config.chunk_size)

    kind, location = resolve_model(config.model)
    if kind == "hub":
        return None
    identity = run_identity(
        model_path=location,
        model_digest=file_digest(location) if kind == "gguf" else None,
        haystack=config.haystack,
        backend=backend(),
        compute_dtype=compute_dtype_for(backend()),
        sdpa=sdpa_identity(config, chunks),
    )
    chash = config.hash(identity)
    name = Path(location).name
    folder = Path(folder) if folder else store.run_folder(config, name, config_hash=chash)
    # a folder of another configuration is refused here, as the loaded run would refuse it
    # (niah.store.prepare_folder) after a load spent for nothing
    stored = store.refuse_other_config(folder, config_hash=chash, identity=identity)
    if stored is None or stored.config_hash != chash:
        return None
    done = store.finished_keys(folder)
    asked = build_grid(config)
    if not asked or any(s.key not in done for s in asked):
        return None
    return Finished(folder=folder, config_hash=chash, identity=identity, cells=len(asked))
