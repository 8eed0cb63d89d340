"""niah: needle-in-a-haystack long-context checks for MLX models.

The package builds token-exact prompts (haystack.py), runs real models through mlx-lm
(model.py), scores and stores every trial (scoring.py, store.py), reports (report.py), and
bundles a chunked full-attention SDPA (niah.sdpa) for very long key sequences.
"""

__version__ = "0.1.0"
