"""`iclab sweep-run GRID.yaml`: a grid of config overrides run as many runs on an existing engine."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `iclab sweep-run` (under construction in this change)."""
