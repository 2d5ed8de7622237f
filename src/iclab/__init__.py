"""iclab: a laboratory for in-context learning in transformers."""

__version__ = "0.1.0"
