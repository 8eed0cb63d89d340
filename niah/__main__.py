"""`python -m niah` runs the CLI."""

from .cli import main

main()
