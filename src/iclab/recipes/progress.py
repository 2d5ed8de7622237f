"""`iclab reproduce`'s progress: one line as each recipe starts, "recipe 3/9 convex", with the time so far and
an estimate of the time left.

The estimate weighs the recipes still to run by their recorded seconds (scales/expected/SCALE.yaml, measured with
the shipped models), scaled by how fast this machine ran the ones already done; a recipe without a record weighs
the mean of those with one, and with no record at all every recipe weighs the same (then nothing is estimated
before the first recipe has finished).
"""

from __future__ import annotations

from .dryrun import duration


def progress_line(index: int, names: list[str], elapsed: float, seconds: dict[str, float]) -> str:
    """The line shown as recipe names[index] starts, `elapsed` seconds after the first one started."""
    known = [seconds[n] for n in names if seconds.get(n)]
    weight = {n: seconds.get(n) or (sum(known) / len(known) if known else 1.0) for n in names}
    done, left = sum(weight[n] for n in names[:index]), sum(weight[n] for n in names[index:])
    line = f"recipe {index + 1}/{len(names)} {names[index]}"
    if index and done > 0:
        return line + f" ({duration(elapsed)} so far, about {duration(elapsed / done * left)} left at this pace)"
    if known:
        return line + f" ({duration(left)} in all when recorded; the estimate then follows this machine's pace)"
    return line
