import math
import os
import stat

import pytest

from iclab.files import atomic_write_text
from iclab.markdown import cell, table
from iclab.stats import Summary, paired_difference, summarize


def test_summarize_known_values():
    s = summarize([1.0, 2.0, 4.0, None, math.nan])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3)
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert s.sd == pytest.approx(sd) and s.se == pytest.approx(sd / math.sqrt(3))
    assert summarize([5.0]) == Summary(5.0, 0.0, 0.0, 1)
    assert summarize([None]) is None


def test_paired_difference_uses_common_keys():
    d = paired_difference({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 2.0})
    assert (d.mean, d.n) == (2.5, 2)


def test_summary_dicts_keep_chosen_keys_and_derive_the_missing_spread():
    s = Summary(2.0, 3.0, 1.5, 4)
    assert s.to_dict("mean", "sd", "n") == {"mean": 2.0, "sd": 3.0, "n": 4}
    assert Summary.from_dict({"mean": 2.0, "sd": 3.0, "n": 4}) == s  # se = 3 / sqrt(4)
    assert Summary.from_dict({"mean": 2.0, "se": 1.5, "n": 4}) == s  # sd = 1.5 * sqrt(4)
    assert Summary.from_dict(None) is None


def test_cells_scale_to_percent():
    assert cell(Summary(0.25, 0.05, 0.025, 4), digits=1, spread="se", scale=100) == "25.0 ± 2.5"
    assert cell(0.125, digits=1, scale=100) == "12.5" and cell(None, scale=100) == "n/a"


def test_markdown_table_and_cells():
    s = Summary(0.5, 0.1, 0.05, 4)
    assert cell(s, spread="sd") == "0.500 ± 0.100" and cell(s, spread="se", digits=2) == "0.50 ± 0.05"
    assert cell(Summary(0.5, 0.0, 0.0, 1), spread="sd") == "0.500" and cell(None) == "n/a"
    assert table(["a", "b"], [["x", 1.0], ["y", None]]) == ["| a | b |", "|---|---:|", "| x | 1.000 |", "| y | n/a |"]
    assert table(["a", "b", "c"], [], align="llr") == ["| a | b | c |", "|---|---|---:|"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "hi")
    mode = stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask and (tmp_path / "f.txt").read_text() == "hi"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left behind
