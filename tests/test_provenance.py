"""provenance(): what a results file records of the code and machine that wrote it."""

import subprocess

from iclab.provenance import git_commit, provenance


def _git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def test_commit_is_dirty_for_changed_code_but_not_for_rewritten_results(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')  # a results file rewritten: still the same code
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "-dirty"
    assert git_commit(tmp_path.parent / "nowhere") == "unknown"


def test_provenance_names_command_commit_date_machine_and_seeds():
    record = provenance(seeds=[0, 1], command="iclab demo")
    assert record["command"] == "iclab demo" and record["seeds"] == [0, 1]
    assert {"cores", "threads", "load_average", "device"} <= set(record["machine"])
    assert record["commit"] and record["date"]
