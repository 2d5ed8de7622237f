"""Each check's outcome against the one recorded for its scale, and what `iclab reproduce` makes of them.

scales/expected/SCALE.yaml records the outcome (PASS or FAIL) each recipe's checks had at that scale when last
measured, keyed by the check's claim: the README states those outcomes, including the checks our small models
fail. A run's check is then one of
- "pass": it passed (as recorded, or with no record);
- "known": it failed, and the record says it fails (a documented miss, not a regression);
- "regression": it failed, and the record says it passes (or there is no record for it);
- "unexpected pass": it passed, and the record says it fails (the record and the README need updating).
`iclab reproduce` exits 1 when a check is a regression or an unexpected pass, i.e. when its outcome differs from
the record, so that CI catches a change while the documented misses keep exit 0; `--strict` exits 1 on any FAIL.
The report's summary table and summary.json say which is which.
"""

from __future__ import annotations

from ..config import read_yaml
from ..markdown import table
from .sizes import FOLDER

PASS, KNOWN, REGRESSION, UNEXPECTED_PASS = "pass", "known", "regression", "unexpected pass"


def record(mode: str) -> dict:
    """scales/expected/MODE.yaml ({} for a scale without one)."""
    path = FOLDER / "expected" / f"{mode}.yaml"
    return read_yaml(path) if path.is_file() else {}


def recorded(mode: str, recipe: str) -> dict[str, str]:
    """The recorded outcome ("PASS"/"FAIL") of each check of `recipe` at scale `mode`, by claim (none: {})."""
    return (record(mode).get("checks") or {}).get(recipe) or {}


def recorded_seconds(mode: str) -> dict[str, float]:
    """Each recipe's seconds with the shipped models at scale `mode`, as measured for the record (none: {})."""
    return record(mode).get("pretrained_seconds") or {}


def with_expected(checks: list[dict], mode: str, recipe: str) -> list[dict]:
    """The checks, each with the outcome recorded for it ("expected": "PASS", "FAIL" or None)."""
    record = recorded(mode, recipe)
    return [c | {"expected": record.get(c["claim"])} for c in checks]


def outcome(check: dict) -> str:
    """pass, known, regression or unexpected pass (see the module's doc); a check stored without "expected" has
    no record."""
    expected = check.get("expected")
    if check["passed"]:
        return UNEXPECTED_PASS if expected == "FAIL" else PASS
    return KNOWN if expected == "FAIL" else REGRESSION


def exit_status(summaries: list[dict], strict: bool = False) -> int:
    """1 if a check's outcome differs from its record (with `strict`: if any check fails), else 0."""
    checks = [c for s in summaries for c in s["checks"]]
    if strict:
        return int(not all(c["passed"] for c in checks))
    return int(any(outcome(c) in (REGRESSION, UNEXPECTED_PASS) for c in checks))


def label(check: dict) -> str:
    """PASS, FAIL (known), FAIL (regression) or PASS (unexpected: recorded FAIL); plain PASS or FAIL for a check
    stored before outcomes were recorded (no "expected" key)."""
    if "expected" not in check:
        return "PASS" if check["passed"] else "FAIL"
    return {
        PASS: "PASS",
        KNOWN: "FAIL (known)",
        REGRESSION: "FAIL (regression)" if check.get("expected") else "FAIL (regression: no record)",
        UNEXPECTED_PASS: "PASS (unexpected: recorded FAIL)",
    }[outcome(check)]


def counts(summaries: list[dict]) -> str:
    """One line: how many checks passed, failed as known, regressed, passed unexpectedly."""
    found = [outcome(c) for s in summaries for c in s["checks"]]
    parts = [f"{found.count(PASS)} PASS", f"{found.count(KNOWN)} known FAIL", f"{found.count(REGRESSION)} regression"]
    if found.count(UNEXPECTED_PASS):
        parts.append(f"{found.count(UNEXPECTED_PASS)} unexpected PASS")
    return f"{len(found)} checks: " + ", ".join(parts)


def summary_table(summaries: list[dict]) -> list[str]:
    """The report's opening table: recipe, check, outcome, recorded outcome, the numbers; then the counts."""
    rows = [
        [s["recipe"], _md(c["claim"]), label(c), c.get("expected") or "none", _md(c["detail"])]
        for s in summaries
        for c in s["checks"]
    ]
    lines = table(["recipe", "check", "outcome", "recorded", "numbers"], rows, align="lllll")
    return lines + ["", counts(summaries) + " (a known FAIL is one the record, and the README, state).", ""]


def summary_rows(summaries: list[dict]) -> list[dict]:
    """summary.json's rows: one per check, with its recipe, outcome and numbers."""
    return [
        {
            "recipe": s["recipe"],
            "mode": s.get("mode"),
            "check": c["claim"],
            "passed": c["passed"],
            "expected": c.get("expected"),
            "outcome": outcome(c),
            "detail": c["detail"],
        }
        for s in summaries
        for c in s["checks"]
    ]


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
