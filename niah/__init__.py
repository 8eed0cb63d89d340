"""niah: needle-in-a-haystack long-context checks for MLX models.

The layout, following `niah run` from the command line to the table (one line per module in
docs/development.md#layout):

- cli.py, cli_common.py, commands.py, options.py, progress.py, outputs.py: the command line:
  parse, call, print.
- config.py, parse.py, environment.py: RunConfig and the parsing of what a user gives.
- run/: the sweep: the grid, the warm-up, prefix reuse, one trial, the TrialRecord type.
- tasks/ (rows in datasets/): task specs and the one trial builder; haystack.py splices
  token-exact prompts (prose.py, values.py, haystack_files.py feed it).
- model.py, generation.py, gguf/ (archs/: one module per architecture): load a model once
  and generate through mlx-lm.
- scoring.py: the verdict of an answer; store.py: run folders and JSONL records;
  identity.py, digest_store.py: what a result belongs to.
- report/: tables, pooling, comparison, the export registry, the plausibility guard.
- sdpa/ over kernels/: the attention drop-in swapped in for a run, and its fused kernels.
- backend.py, blas.py, user_cache.py, errors.py, preflight.py, doctor.py, verify.py: the
  device, the environment, and the checks around a run.
"""

import time as _time

__version__ = "0.1.0"
IMPORTED_AT = _time.perf_counter()  # where the startup phase begins (niah.run.phases)
