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

    def to_dict(self) -> dict:
        return asdict(self)


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
