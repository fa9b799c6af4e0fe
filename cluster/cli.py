"""Entry point of the `zeroserve` console script."""

from ._cli import main

__all__ = ["main"]
