"""Dai et al. (2023) on iclab's own models: is in-context learning implicit finetuning?

A small TokenLM is pretrained on the synthetic keyword-classification world (tasks/keywords.py): each prompt is
a fresh task instance whose label map must be read off the demonstrations. The ICL-vs-finetuning engine then
compares ZSL, ICL and K/V-only finetuning on many instances, for the trained model, with a random update in
place of FT's, and for an untrained model of the same shape (Deutch et al. 2024 found untrained models score
similarly on such measures, so a measure only counts where it beats both).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..errors import UserError
from ..evaluation.report import save_figure
from ..files import atomic_write_json
from ..icl_vs_ft.adapter import IclabLMAdapter
from ..icl_vs_ft.engine import FT_METHODS, VARIANTS, StudyData, studies, untrained_like
from ..icl_vs_ft.metrics import MEASURES, VARIANT_MEASURES, kendall_tau
from ..icl_vs_ft.results import accuracy_tables, as_dict, gap_table, measures_tables, spread_note, summarise, value
from ..markdown import table
from ..model import ModelConfig, TokenLM
from ..spec import build
from ..tasks.keywords import KeywordClassification
from .common import check, section_lines
from .models import pretrained_dir
from .recipe import Recipe
from .sizes import KeywordsLMSize, Sizes

NAME = "icl-vs-ft"
TASK = KeywordClassification(vocab=64, classes=2, keywords=4, length=4, noise=0.2, prior=0.5)
MODEL = ModelConfig(layers=2, width=64, heads=2)
TRAIN_DEMOS, DEMOS = 12, 8
MODEL_NAME = "keywords_lm"  # its folder under DIR/models/MODE/ and in the package's pretrained/
SIZES = Sizes(NAME, KeywordsLMSize)  # scales/icl-vs-ft/SCALE.yaml: pretraining steps, instances scored
LRS = [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
# the pretraining checkpoints (fractions of the steps; 1: the model itself) at which the emergence study measures
CHECKPOINTS = (0, 0.125, 0.25, 0.5)
RISING = ("simaou", "kendall", "simam_icl_ft")  # the similarity measures whose rise with ICL ability is checked


def checkpoint_steps(steps: int) -> list[int]:
    return sorted({int(f * steps) for f in CHECKPOINTS} - {steps})


def max_tokens() -> int:
    return 1 + (TRAIN_DEMOS + 1) * (TASK.length + 2)


def train_model(
    steps: int, seed: int = 0, progress: bool = True, snapshots: dict[int, dict] | None = None
) -> tuple[TokenLM, float]:
    """Pretrain on fresh instances every step; cross-entropy on the label positions only. `snapshots` gets the
    weights before each of `checkpoint_steps(steps)` (step 0: the initial model)."""
    torch.manual_seed(seed)
    model = TokenLM(MODEL, TASK.vocab, max_tokens())
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed + 1)
    positions = TASK.label_positions(TRAIN_DEMOS + 1)
    started = time.perf_counter()
    keep = set(checkpoint_steps(steps)) if snapshots is not None else set()
    for step in tqdm(range(steps), desc="train keywords LM", disable=not progress, mininterval=1):
        if step in keep:
            snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        lr = 2e-3 * min(1.0, (step + 1) / 100) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        ex = TASK.examples(TASK.instances(128, g), TRAIN_DEMOS + 1, g)
        logits = model(TASK.sequence(ex["inputs"], ex["labels"])[:, :-1])[:, positions]
        loss = F.cross_entropy(logits.reshape(-1, TASK.vocab), ex["labels"].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval(), time.perf_counter() - started


def ensure_model(folder: Path, steps: int, progress: bool) -> tuple[TokenLM, dict]:
    """Load the model saved in `folder`, or train and save it there (safetensors + JSON)."""
    weights, info_path = folder / "model.safetensors", folder / "model.json"
    wanted = {"model": dataclasses.asdict(MODEL), "task": dataclasses.asdict(TASK), "steps": steps}
    if weights.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        # model keys added since it was saved take their defaults, which are what it was trained with
        info["model"] = dataclasses.asdict(build(ModelConfig, info["model"]))
        if {k: info[k] for k in wanted} != wanted:
            raise UserError(f"{folder} holds a model trained with other settings; remove it or choose another --out")
        model = TokenLM(MODEL, TASK.vocab, max_tokens())
        model.load_state_dict(load_file(weights))
        return model.eval(), info
    snapshots = {}
    model, seconds = train_model(steps, progress=progress, snapshots=snapshots)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    for step, state in snapshots.items():
        _save(state, folder / "checkpoints" / f"step-{step}.safetensors")
    _save(model.state_dict(), weights)  # last: a folder with its model.safetensors is complete
    info = wanted | {"train_seconds": round(seconds, 1), "parameters": model.num_parameters()}
    atomic_write_json(info_path, info)
    return model, info


def _save(state: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, tmp)
    tmp.replace(path)


def checkpoints(folder: Path, steps: int) -> dict[int, TokenLM]:
    """The pretraining checkpoints saved beside the model (none for a model saved before iclab kept them)."""
    paths = {s: folder / "checkpoints" / f"step-{s}.safetensors" for s in checkpoint_steps(steps)}
    if not all(p.is_file() for p in paths.values()):
        return {}
    out = {}
    for step, path in paths.items():
        out[step] = TokenLM(MODEL, TASK.vocab, max_tokens())
        out[step].load_state_dict(load_file(path))
        out[step].eval()
    return out


def run(out: Path, mode: str, pretrained: bool, progress: bool) -> dict:
    size = SIZES["full" if pretrained else mode]
    folder = out / NAME
    model_dir = pretrained_dir(MODEL_NAME) if pretrained else out / "models" / mode / MODEL_NAME
    if pretrained and not (model_dir / "model.safetensors").is_file():
        raise UserError("no pretrained keywords LM ships with this iclab; run without --pretrained")
    model, info = ensure_model(model_dir, size["steps"], progress)
    torch.manual_seed(1)
    untrained = TokenLM(MODEL, TASK.vocab, max_tokens()).eval()
    models = {
        "trained": model,
        "untrained": untrained,  # every weight fresh
        "untrained-deutch": untrained_like(IclabLMAdapter(model), untrained),  # Deutch et al.'s baseline
    }
    started = time.perf_counter()
    g = torch.Generator().manual_seed(2024)
    instances = TASK.instances(size["instances"], g)
    results = {v: {name: {f: [] for f in FT_METHODS} for name in models} for v in VARIANTS}
    grids = dict.fromkeys(FT_METHODS, LRS)
    snapshots = checkpoints(model_dir, info["steps"])
    emergence = {step: [] for step in snapshots}
    for i in tqdm(range(size["instances"]), desc="ICL vs FT", disable=not progress):
        instance = {k: v[i : i + 1] for k, v in instances.items()}
        data = StudyData(**TASK.study_inputs(instance, DEMOS, n_test=64, n_val=32, generator=g), separator_tokens=1)
        for variant in VARIANTS:
            for name, m in models.items():
                for method, r in studies(IclabLMAdapter(m), data, grids, seed=i, measures=variant).items():
                    results[variant][name][method].append(as_dict(r))
        for step, m in snapshots.items():  # Dai's measures and finetuning on the same instance, earlier in pretraining
            emergence[step].append(as_dict(studies(IclabLMAdapter(m), data, {"kv-sgd": LRS}, seed=i)["kv-sgd"]))
    variants = {
        variant: {name: {f: summarise(rs) for f, rs in by_ft.items()} for name, by_ft in per_model.items()}
        for variant, per_model in results.items()
    }
    # the headline: Dai's measures, Dai's finetuning; the checks read these
    summary = {name: variants["dai"][name]["kv-sgd"] for name in models} | {"variants": variants}
    if snapshots:
        summary["emergence"] = {str(step): summarise(rs) for step, rs in emergence.items()}
        summary["emergence"][str(info["steps"])] = summary["trained"]
    atomic_write_json(
        folder / "results.json", summary | {"model": info, "instances": size["instances"], "demos": DEMOS, "lrs": LRS}
    )
    draw(summary, folder)
    return {
        "checks": check_summary(summary),
        "seconds": round(time.perf_counter() - started, 1),
        "model": {"steps": info["steps"], "train_seconds": info["train_seconds"]},
    }


def export_model(folder: Path, dest: Path) -> Path:
    """Copy a trained model's weights and settings into the package (see scripts/ship_pretrained.py)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "model.json"):
        shutil.copy2(folder / name, dest / name)
    if (folder / "checkpoints").is_dir():  # the emergence study's pretraining checkpoints
        shutil.copytree(folder / "checkpoints", dest / "checkpoints", dirs_exist_ok=True)
    return dest


def _m(summary, model, part, key):
    entry = summary[model][part].get(key)
    return entry["mean"] if entry else None


def _above(summary, key, other_model, other_part) -> tuple[bool, str]:
    a, b = summary["trained"]["measures"].get(key), summary[other_model][other_part].get(key)
    if a is None or b is None:
        return False, "n/a (undefined on these data)"
    margin = 2 * math.hypot(a["se"], b["se"])
    return a["mean"] - b["mean"] > margin, f"{a['mean']:.3f} vs {b['mean']:.3f} (2 s.e. of the difference {margin:.3f})"


def check_summary(summary: dict, emergence: bool = True) -> list[dict]:
    acc = {k: _m(summary, "trained", "accuracy", k) for k in ("zsl", "icl", "ft")}
    fmt = {k: "n/a" if v is None else f"{v:.3f}" for k, v in acc.items()}
    rec = summary["trained"]["measures"]["rec2ftp"]
    rec_ok, rec_detail = _above(summary, "rec2ftp", "trained", "random")
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


def emergence_table(summary: dict, note: str) -> list[str]:
    rows = emergence_rows(summary)
    if not rows:
        return ["No pretraining checkpoints were saved with this model (trained before iclab kept them, or the shipped "
                "one): remove its folder, or run without --pretrained, to measure emergence.", ""]
    keys = VARIANT_MEASURES["dai"]
    body = []
    for step, gain, _ in rows:
        s = summary["emergence"][str(step)]
        body.append([str(step), value(s["accuracy"].get("zsl"), True), value(s["accuracy"].get("icl"), True),
                     "n/a" if gain is None else f"{100 * gain:+.1f}", *(value(s["measures"].get(k)) for k in keys)])
    header = [f"step ({note})", "ZSL %", "ICL %", "ICL gain", *(MEASURES[k] for k in keys)]
    lines = ["Emergence: Dai's measures (kv-sgd) at pretraining checkpoints, beside ICL's accuracy gain over ZSL:", ""]
    return lines + table(header, body) + [""]


def tables(summary: dict, results: dict) -> list[str]:
    """The report's tables (icl_vs_ft/results.py, as `iclab lm run` writes them) and the verdict."""
    note = spread_note(results["instances"], "task instances")
    models = {m: summary[m] for m in ("trained", "untrained", "untrained-deutch") if m in summary}
    lines = accuracy_tables(models, note) + [""]
    for variant, by_model in (summary.get("variants") or {}).items():
        lines += measures_tables(by_model, variant, list(FT_METHODS), note) + [""]
    lines += gap_table(models, note) + [""] + emergence_table(summary, note)
    similar = check_summary(summary, emergence=False)[4:]
    passed = sum(c["passed"] for c in similar)
    if passed == len(similar):
        verdict = "supports the reading of ICL as implicit finetuning on this model"
    elif passed == 0:
        verdict = (
            "does not support the reading of ICL as implicit finetuning on this model: no similarity measure "
            "beats its baselines"
        )
    else:
        verdict = f"is mixed: {passed} of {len(similar)} comparisons with the baselines favour the reading"
    failed = summary["trained"]["ft_failed"]
    lines += [
        "",
        f"{results['instances']} task instances of {results['demos']} demonstrations and 64 test queries, plain "
        f"scoring (the keyword task has no content-free input); FT learning rate from {results['lrs']} by "
        "validation accuracy" + (f"; FT diverged at every rate on {failed} instances" if failed else "") + ".",
        "",
        f"**Verdict.** The evidence {verdict}.",
        "",
    ]
    for c in emergence_check(summary):
        found = "rise" if c["passed"] else "do not all rise"
        lines += [f"**Emergence.** Over pretraining, SimAOU, Kendall and SimAM ICL-FT {found} with ICL's accuracy "
                  f"gain over zero-shot: {c['detail']}.", ""]
    return lines


def draw(summary: dict, folder: Path) -> list[Path]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, gridspec_kw={"width_ratios": [1, 2]})
    for j, name in enumerate(("trained", "untrained")):
        vals = [_m(summary, name, "accuracy", k) or 0 for k in ("zsl", "ft", "icl")]
        ax1.bar([x + 0.4 * j for x in range(3)], vals, width=0.4, label=name)
    ax1.set_xticks([x + 0.2 for x in range(3)], ["ZSL", "FT", "ICL"])
    ax1.set_ylim(0, 1)
    ax1.set_title("accuracy")
    ax1.legend(fontsize=8)
    keys = ["simaou", "simam_icl_ft", "simam_icl_zsl", "kendall"]
    series = [("trained", "measures"), ("trained", "random"), ("untrained", "measures")]
    for j, (name, part) in enumerate(series):
        vals = [_m(summary, name, part, k) or 0 for k in keys]
        label = {"measures": name, "random": "random update"}[part] if part == "random" else name
        ax2.bar([x + 0.27 * j for x in range(4)], vals, width=0.27, label=label)
    ax2.set_xticks([x + 0.27 for x in range(4)], ["SimAOU", "SimAM ICL-FT", "SimAM ICL-ZSL", "Kendall"], fontsize=8)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_title("similarity of ICL and FT")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return [save_figure(fig, folder / "icl_vs_ft.png")] + draw_emergence(summary, folder)


def draw_emergence(summary: dict, folder: Path) -> list[Path]:
    """Each Dai measure against ICL's accuracy gain at every pretraining checkpoint (labelled by step)."""
    rows = [r for r in emergence_rows(summary) if r[1] is not None]
    if not rows:
        return []
    keys = VARIANT_MEASURES["dai"]
    fig, axes = plt.subplots(3, 4, figsize=(12, 8), dpi=100)
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(gain, m[key], step) for step, gain, m in rows if m[key] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "-o", ms=4)
            for x, y, step in points:
                ax.annotate(str(step), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(MEASURES[key], fontsize=9)
        ax.set_xlabel("ICL accuracy - ZSL accuracy", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle("Dai's measures against ICL ability over pretraining (points: checkpoint steps)")
    fig.tight_layout()
    return [save_figure(fig, folder / "emergence.png")]


def section(folder: Path, stored: dict) -> list[str]:
    results = json.loads((folder / "results.json").read_text())
    keys = ("trained", "untrained", "untrained-deutch", "variants", "emergence")
    summary = {k: results[k] for k in keys if k in results}
    figures = draw(summary, folder)
    checks = check_summary(summary)
    stored = stored | {"tables": tables(summary, results)}
    model = results["model"]
    footer = (
        f"Model: {model['parameters']:,} parameters, {model['steps']} pretraining steps "
        f"({model['train_seconds']:.0f} s); study {stored['seconds']:.0f} s. Numbers: `{folder.name}/results.json`."
    )
    return section_lines(RECIPE, folder, figures, checks, stored, footer)


RECIPE = Recipe(
    name=NAME,
    title="ICL as implicit finetuning: ZSL, ICL and K/V finetuning on iclab's own token model",
    claim=(
        "In-context learning behaves like finetuning: of the examples finetuning fixes, ICL gets most right "
        "(Rec2FTP 86-89 %); ICL's attention-output updates point the way finetuning's do (SimAOU 0.19-0.23 vs "
        "~0 for a random update); ICL's attention map is closer to FT's than to ZSL's (SimAM 0.44 vs 0.34); "
        "ICL's attention to demonstration tokens ranks them as FT's does (Kendall 0.19-0.21). (Dai et al. 2023; "
        "figures from summaries, unverified.)"
    ),
    differences=(
        "Dai et al. used 1.3B/2.7B GPTs on six text-classification sets; here a 2-layer, width-64 token "
        "model pretrained for minutes on a synthetic keyword-classification world (label maps are random "
        "per instance, canonical half the time, so zero-shot sits near 75 %), 8 demonstrations, learning "
        "rate picked per instance on validation queries. The same engine runs on pretrained causal LMs "
        "through `iclab lm run` (see the README)."
    ),
    modes=tuple(SIZES),
    run=run,
    check=check_summary,
    draw=draw,
    section=section,
    shipped=True,  # the keywords LM ships with iclab
)
