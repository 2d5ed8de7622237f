"""iclab: a laboratory for in-context learning in transformers.

The Python API (api.py), importable from here:

    import iclab

    run = iclab.train("demo", out="runs/quick", overrides={"train.steps": 500})
    run.evaluate().save()                    # what `iclab eval runs/quick` writes
    iclab.compare([run, "runs/other"])       # what `iclab compare runs/quick runs/other` writes

`import iclab` itself loads no torch: the API's names import it on first use.
"""

from typing import Any

from . import _aliases

__version__ = "0.1.0"
__all__ = ["Config", "EvalResult", "Run", "compare", "load_run", "make_config", "train"]

_aliases.install()


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'iclab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
