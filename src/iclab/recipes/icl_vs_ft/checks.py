"""The icl-vs-ft recipe's checks of Dai et al.'s claims, read off the study's summary: ICL and FT beat zero-shot,
Rec2FTP, each similarity measure against its baselines, and (with pretraining checkpoints) their rise with ICL
ability over pretraining."""

from __future__ import annotations

import math

import torch

from ...icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES, kendall_tau
from ..common import check

RISING = ("simaou", "kendall", "simam_icl_ft")  # the similarity measures whose rise with ICL ability is checked


def mean_of(summary: dict, model: str, part: str, key: str) -> float | None:
    entry = summary[model][part].get(key)
    return entry["mean"] if entry else None


def _above(summary: dict, key: str, other_model: str, other_part: str) -> tuple[bool, str]:
    a, b = summary["trained"]["measures"].get(key), summary[other_model][other_part].get(key)
    if a is None or b is None:
        return False, "n/a (undefined on these data)"
    margin = 2 * math.hypot(a["se"], b["se"])
    return a["mean"] - b["mean"] > margin, f"{a['mean']:.3f} vs {b['mean']:.3f} (2 s.e. of the difference {margin:.3f})"


def check_summary(summary: dict, emergence: bool = True) -> list[dict]:
    acc = {k: mean_of(summary, "trained", "accuracy", k) for k in ("zsl", "icl", "ft")}
    fmt = {k: "n/a" if v is None else f"{v:.3f}" for k, v in acc.items()}
    rec = summary["trained"]["measures"]["rec2ftp"]
    out = [
        check(
            "the model learned in context: ICL accuracy above zero-shot",
            acc["icl"] is not None and acc["icl"] > acc["zsl"],
            f"ICL {fmt['icl']}, ZSL {fmt['zsl']}",
        ),
        check(
            "finetuning on the demonstrations helps: FT accuracy above zero-shot",
            acc["ft"] is not None and acc["ft"] > acc["zsl"],
            f"FT {fmt['ft']}, ZSL {fmt['zsl']}",
        ),
        check(
            "Rec2FTP: ICL gets most (>= 50 %) of the examples FT fixes right",
            rec is not None and rec["mean"] >= 0.5,
            "n/a (FT fixed no example)" if rec is None else f"{rec['mean']:.3f} over {rec['n']} instances",
        ),
    ]
    for key, label in (("simaou", "SimAOU"), ("kendall", "Kendall")):
        for other, part, name in (
            ("trained", "random", "a random update"),
            ("untrained", "measures", "an untrained model"),
        ):
            ok, detail = _above(summary, key, other, part)
            out.append(check(f"{label} of the trained model above {name}'s", ok, detail))
    icl_ft, icl_zsl = (summary["trained"]["measures"].get(k) for k in ("simam_icl_ft", "simam_icl_zsl"))
    ok, detail = False, "n/a (undefined on these data)"
    if icl_ft and icl_zsl:
        margin = 2 * math.hypot(icl_ft["se"], icl_zsl["se"])
        ok = icl_ft["mean"] - icl_zsl["mean"] > margin
        detail = f"ICL-FT {icl_ft['mean']:.3f} vs ICL-ZSL {icl_zsl['mean']:.3f} (2 s.e. of the difference {margin:.3f})"
    out.append(check("SimAM: ICL's attention map closer to FT's than to ZSL's", ok, detail))
    ok, detail = _above(summary, "simam_icl_ft", "untrained", "measures")
    out.append(check("SimAM ICL-FT of the trained model above an untrained model's", ok, detail))
    return out + (emergence_check(summary) if emergence else [])


def emergence_rows(summary: dict) -> list[tuple[int, float | None, dict]]:
    """Per pretraining checkpoint, in step order: (step, ICL's accuracy gain over ZSL, each Dai measure's mean)."""
    rows = []
    for step, s in sorted((summary.get("emergence") or {}).items(), key=lambda kv: int(kv[0])):
        icl, zsl = ((s["accuracy"].get(c) or {}).get("mean") for c in ("icl", "zsl"))
        gain = None if icl is None or zsl is None else icl - zsl
        means = {k: (s["measures"].get(k) or {}).get("mean") for k in VARIANT_MEASURES["dai"]}
        rows.append((int(step), gain, means))
    return rows


def emergence_check(summary: dict) -> list[dict]:
    """Does the similarity rise with ICL ability? Kendall τ between ICL's accuracy gain and each measure over the
    checkpoints (none without checkpoints)."""
    rows = emergence_rows(summary)
    if not rows:
        return []
    taus = {}
    for key in RISING:
        points = [(gain, m[key]) for _, gain, m in rows if gain is not None and m[key] is not None]
        tau = float(kendall_tau(*torch.tensor(points, dtype=torch.float64).T)) if len(points) > 2 else math.nan
        taus[key] = None if math.isnan(tau) else tau
    detail = ", ".join(f"{MEASURES[k]} τ = {'n/a' if t is None else f'{t:.2f}'}" for k, t in taus.items())
    detail += f" over {len(rows)} checkpoints (steps {', '.join(str(r[0]) for r in rows)})"
    claim = "the similarity measures rise with ICL ability over pretraining (Kendall τ > 0 with ICL's accuracy gain)"
    return [check(claim, all(t is not None and t > 0 for t in taus.values()), detail)]
