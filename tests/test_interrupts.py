"""SIGTERM to the command stops parallel work: a benchmark's worker processes and a launcher's sweep members."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A static method that marks when it starts and then waits, so that the test interrupts it mid-task.
WAITING_PLUGIN = '''
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mixbench.method import StaticMethod, register


@register
class Waiting(StaticMethod):
    """Wait `seconds` before returning the uniform mixture."""

    name = "waiting"

    def __init__(self, seconds: float = 120.0):
        self.seconds = seconds

    def optimize(self, context):
        # A progress bar, shown or not, as each training run opens one.
        tqdm(total=1, disable=True).close()
        (Path(os.environ["MARKS"]) / f"started-{context.seed}").touch()
        time.sleep(self.seconds)
        return np.full(context.m, 1.0 / context.m)
'''

SIM = ["experiment=sim", "sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4", "plugins=[waiting_methods]",
       "hydra.searchpath=[file://conf]"]


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "waiting_methods.py").write_text(WAITING_PLUGIN)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "waiting.yaml").write_text(
        "# A method that waits, for interrupt tests.\n# Launch: mixbench run method=waiting\nname: waiting\nseconds: 120.0\n")
    (tmp_path / "marks").mkdir()
    return tmp_path


def start(plugin_dir: Path, *arguments: str, ignore_sigint: bool = False) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")]))
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, MARKS=str(plugin_dir / "marks"))
    # A shell script's `command &` starts the command with SIGINT ignored, and its children inherit that.
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, "-m", "mixbench", *arguments], cwd=plugin_dir, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=ignore)


def wait_for_marks(plugin_dir: Path, count: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list((plugin_dir / "marks").iterdir())) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the tasks did not start: {process.communicate()[1][-3000:]}")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> tuple[int, str, float]:
    """Send SIGTERM to the command alone; return its exit status, its stderr and the seconds it took to exit."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        # Whatever the outcome, leave no process of the test behind.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, stderr, time.monotonic() - sent


def test_benchmark_workers_stop_and_queue_dropped(plugin_dir):
    methods = "experiment.methods=[waiting]"
    process = start(plugin_dir, "benchmark", *SIM, methods, "experiment.seeds=[0,1,2]", "experiment.jobs=2",
                    "train.threads=2", "results_dir=results")
    wait_for_marks(plugin_dir, 2, process)
    status, stderr, seconds = stop(process)
    assert status == 143, stderr[-3000:]
    assert "mixbench: interrupted." in stderr
    # Ended workers leave no semaphore behind for Python's resource tracker to report.
    assert "leaked semaphore" not in stderr
    # The running tasks end at once instead of after their 120 s, and the queued third task never starts.
    assert seconds < 30
    time.sleep(2)
    assert sorted(path.name for path in (plugin_dir / "marks").iterdir()) == ["started-0", "started-1"]


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["terminal", "started-with-sigint-ignored"])
def test_submitit_members_stop_with_launcher(plugin_dir, ignore_sigint):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    process = start(plugin_dir, "run", "-m", "hydra/launcher=submitit_local", *SIM, "method=waiting", "seed=0,1",
                    "results_dir=results", ignore_sigint=ignore_sigint)
    wait_for_marks(plugin_dir, 2, process)
    status, stderr, seconds = stop(process)
    assert status == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    assert seconds < 30
    # Each member stops as after Ctrl-C and reports it in its own log; none writes a result.
    logs = sorted((plugin_dir / "results" / ".multirun").glob("*/.submitit/*/*_log.err"))
    assert len(logs) == 2
    for log in logs:
        assert "mixbench: interrupted." in log.read_text()
    assert not (plugin_dir / "results" / "sim" / "methods").exists()


def test_interrupt_during_sweep_check_exits_cleanly(monkeypatch, capsys):
    from mixbench import cli, sweep_check

    def interrupted(command, arguments):
        raise KeyboardInterrupt

    # Ctrl-C while the command checks the sweep, before Hydra starts: the usual line and status, no traceback.
    monkeypatch.setattr(sweep_check, "sweep_error", interrupted)
    # main() sets sys.argv for Hydra and installs a SIGTERM handler; both are restored afterwards.
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        status = cli.main(["run", "-m", "method=stratified,natural", "experiment=sim"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status == 130
    assert "mixbench: interrupted." in capsys.readouterr().err


def test_ctrl_c_after_the_command_finished_is_ignored():
    # A Ctrl-C after the command returned (while Python frees torch during shutdown) must neither
    # kill the process nor print a traceback: the results are already saved.
    script = (
        "import os, signal, sys, time\n"
        "from mixbench.cli import main\n"
        "sys.argv = ['mixbench', '--help']\n"
        "status = main()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)\n"
        "print('shutdown went on')\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "shutdown went on" in done.stdout
    assert "Traceback" not in done.stderr
