"""iclab: a laboratory for in-context learning in transformers."""

from . import _aliases

__version__ = "0.1.0"

_aliases.install()
