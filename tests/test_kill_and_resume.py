"""The kill-and-resume script, with two trials, as a regression test of exact resume."""

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import kill_and_resume  # noqa: E402


def test_killed_runs_resume_identically(tmp_path, capsys):
    status = kill_and_resume.main(["--kills", "2", "--method", "odm", "--steps", "48", "--workdir", str(tmp_path)])
    output = capsys.readouterr().out
    assert "2 of 2 resumed runs identical" in output, output
    assert status == 0


@pytest.mark.parametrize("sent, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_interrupt_says_how_to_resume(tmp_path, sent, status):
    from conftest import _real_text_folders

    _real_text_folders(tmp_path / "domains")
    results, log = tmp_path / "results", tmp_path / "interrupted.log"
    arguments = kill_and_resume.command(tmp_path, results, "odm", 400)
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    process = kill_and_resume.start(arguments, environment, log)
    assert kill_and_resume.wait_for(process, results, kill_and_resume.CHECKPOINT) is not None, log.read_text()[-2000:]
    process.send_signal(sent)

    # One line instead of a traceback, the usual exit status (128 plus the signal), no record.
    assert process.wait(timeout=120) == status
    output = log.read_text()
    assert "mixbench: interrupted. Finished runs are kept; run the same command again to resume" in output
    assert "Traceback" not in output
    kill_and_resume.check_no_partial_record(results)
    assert kill_and_resume.resume(arguments, environment, tmp_path / "resumed.log") is not None
