"""`python -m iclab.cli ...` (and `torchrun -m iclab.cli train ...`) runs the `iclab` command."""

import sys

from .commands import main

sys.exit(main())
