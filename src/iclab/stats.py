"""Summaries over seeds or instances: mean, standard deviation, standard error, and paired differences.

One definition for every table in iclab: sd is the sample standard deviation (n − 1), 0 for one value; se = sd/√n."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    mean: float
    sd: float
    se: float
    n: int

    def to_dict(self, *keys: str) -> dict:
        """The fields as a dict; only `keys` (e.g. "mean", "sd", "n") when given."""
        fields = asdict(self)
        return {k: fields[k] for k in keys} if keys else fields

    @classmethod
    def from_dict(cls, stored: Mapping | None) -> Summary | None:
        """A Summary from a stored dict of mean, n and sd or se (the missing one derived); None stays None."""
        if stored is None:
            return None
        n, root = stored["n"], math.sqrt(stored["n"])
        sd = stored["sd"] if "sd" in stored else stored["se"] * root
        se = stored["se"] if "se" in stored else stored["sd"] / root
        return cls(stored["mean"], sd, se, n)


def summarize(values: Iterable[float | None]) -> Summary | None:
    """Mean, sd, se and n of the values that are not None (or NaN); None when there are none."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return None
    sd = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return Summary(statistics.fmean(kept), sd, sd / math.sqrt(len(kept)), len(kept))


def paired_difference(a: Mapping, b: Mapping) -> Summary | None:
    """Summary of a[key] − b[key] over the keys both have (e.g. seeds): the paired comparison of two variants."""
    return summarize(a[key] - b[key] for key in a if key in b)
