"""`python -m iclab.cli ...` (and `torchrun -m iclab.cli train ...`) runs the `iclab` command."""

import os
import sys

from .commands import main

code = main()
world_size = os.environ.get("WORLD_SIZE", "1")
if world_size.isdigit() and int(world_size) > 1:
    # A torchrun worker whose run has finished (and been written, and left the process group) ends without the
    # interpreter's teardown: there, objects that still hold gloo work (DDP's reducer) were destroyed after the
    # group and could abort the process in C++ ("terminate called without an active exception", SIGABRT), so
    # torchrun reported a finished run as failed. Nothing is left to flush but the standard streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
