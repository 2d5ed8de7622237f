"""Every argparse module of the `iclab` command: `commands` (train, eval, report, sweep, reproduce, ...), `grid`
(iclab grid), `lm` (iclab lm ...) and `text` (iclab text ...). Implementation modules never import argparse."""

from .commands import main

__all__ = ["main"]
