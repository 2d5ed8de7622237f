"""`iclab lm ...`: the language-model study commands. Only argparse at import time: the CLI must start fast."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab lm` (under construction in this change)."""
