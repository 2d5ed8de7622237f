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


def test_markdown_table_and_cells():
    s = Summary(0.5, 0.1, 0.05, 4)
    assert cell(s, spread="sd") == "0.500 ± 0.100" and cell(s, spread="se", digits=2) == "0.50 ± 0.05"
    assert cell(Summary(0.5, 0.0, 0.0, 1), spread="sd") == "0.500" and cell(None) == "n/a"
    assert table(["a", "b"], [["x", 1.0], ["y", None]]) == ["| a | b |", "|---|---:|", "| x | 1.000 |", "| y | n/a |"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "hi")
    mode = stat.S_IMODE(os.stat(tmp_path / "f.txt").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask and (tmp_path / "f.txt").read_text() == "hi"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left behind
