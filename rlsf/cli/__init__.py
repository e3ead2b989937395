"""The ``rlsf`` console script: ``main`` parses flags built from the stages' settings;
``check`` is ``rlsf check`` (a certificate and its token rewards, by hand)."""

from rlsf.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
