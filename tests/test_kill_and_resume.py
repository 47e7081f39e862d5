"""The kill-and-resume script, with two trials, as a regression test of exact resume."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import kill_and_resume  # noqa: E402


def test_killed_runs_resume_identically(tmp_path, capsys):
    status = kill_and_resume.main(["--kills", "2", "--method", "odm", "--steps", "48", "--workdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert "2 of 2 resumed runs identical" in output, output
    assert status == 0
