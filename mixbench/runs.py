"""The run store: content-hashed run specs, atomic records, cache hits and resume.

Every training run is described by a `RunSpec`. Its content hash is its id, so a run needed by
several methods (the stratified run is also DoReMi's reference) is trained once. A run directory
holds `spec.json`, an append-only `metrics.jsonl`, the latest `checkpoint/`, and `record.json`,
which is written last and atomically: a run without a record is incomplete and resumes.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mixbench
from mixbench.errors import ConfigError

log = logging.getLogger(__name__)

# Mixture weights are rounded before hashing, so that the same mixture computed twice with
# rounding noise in the last bits maps to the same run.
HASH_DECIMALS = 10

# Training settings that do not change a run's outcome (at a fixed thread count), so they are
# left out of its hash: changing them reuses earlier runs.
UNHASHED_TRAIN_KEYS = frozenset({"threads", "checkpoint_every", "progress", "trackers", "tracker_dir"})


def _canonical(value: Any) -> Any:
    """Convert numpy types and tuples to plain JSON values with a stable float representation."""
    if isinstance(value, dict):
        return {str(key): _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_canonical(item) for item in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        return round(float(value), HASH_DECIMALS)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's outcome; its hash is the run id.

    `data` identifies the corpus (fingerprint, domains, tokenizer), `model` and `train` are the
    model and training settings, and either `mixture` (a static run) or `method` (an online method
    driving the run) says what the run trains on. `role` (final, probe, reference, ...) is a label
    that is recorded but not hashed.
    """

    data: dict
    model: dict
    train: dict
    seed: int
    mixture: tuple[float, ...] | None = None
    method: dict | None = None
    role: str = field(default="final", compare=False)

    def hashed_content(self) -> dict:
        content = {
            "data": self.data,
            "model": self.model,
            "train": {key: value for key, value in self.train.items() if key not in UNHASHED_TRAIN_KEYS},
            "seed": self.seed,
            "mixture": list(self.mixture) if self.mixture is not None else None,
            "method": self.method,
        }
        return _canonical(content)

    @property
    def id(self) -> str:
        encoded = json.dumps(self.hashed_content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return _canonical(asdict(self)) | {"id": self.id}

    @classmethod
    def from_dict(cls, payload: dict) -> "RunSpec":
        mixture = payload.get("mixture")
        return cls(
            data=payload["data"],
            model=payload["model"],
            train=payload["train"],
            seed=payload["seed"],
            mixture=tuple(mixture) if mixture is not None else None,
            method=payload.get("method"),
            role=payload.get("role", "final"),
        )


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to `path` through a temporary file in the same folder and an atomic rename."""
    write_text_atomic(path, json.dumps(_canonical_record(payload), indent=1, sort_keys=True))


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file readable by its owner only; records are shared results.
        os.chmod(temporary, 0o644)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _canonical_record(value: Any) -> Any:
    """Like `_canonical` but keeps full float precision, for records rather than hashes."""
    if isinstance(value, dict):
        return {str(key): _canonical_record(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_record(item) for item in value]
    if isinstance(value, np.ndarray):
        return _canonical_record(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not np.isfinite(value):
            # JSON has no NaN or infinity; keep them readable and distinguishable.
            return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def git_commit() -> str | None:
    """Return the commit of the checkout mixbench runs from, or None outside a git checkout."""
    root = Path(mixbench.__file__).resolve().parents[1]
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def provenance() -> dict:
    """Return the version fields every record carries."""
    return {"mixbench_version": mixbench.__version__, "git_commit": git_commit()}


@contextlib.contextmanager
def folder_lock(directory: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive `flock` on `directory/.lock` (creating the folder), across processes.

    When another process holds the lock, the line `waiting` (or one naming the folder) is logged
    first, since the wait can last as long as a training run.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(waiting or f"waiting for another process that holds the lock on {directory}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def probe_writable(folder: Path) -> None:
    """Create `folder` (with its parents) and create and delete a temporary file in it.

    Raises OSError when either step fails: a read-only mount, missing permissions, or a file in
    the folder's place. The run store and the table and figures commands check their folders here.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A unique probe name: a name built from the process id collides between threads, and
    # between hosts sharing the folder, so one opener could delete the other's probe.
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def require_writable(folder: Path, kind: str, fix: str) -> None:
    """Raise ConfigError naming `folder` (a `kind` folder, such as "table") and `fix` when it cannot be written to."""
    try:
        probe_writable(folder)
    except OSError as error:
        raise ConfigError(f"{kind} folder {str(folder)!r} is not writable ({error.strerror}); {fix}") from None


class RunStore:
    """A folder of run directories keyed by spec id.

    A store opened with `read_only=True` neither creates nor probes its folder, so records can be
    read from a read-only (shared or archived) results folder. Training through it raises ConfigError.
    """

    def __init__(self, root: str | Path, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only
        if read_only:
            return
        try:
            probe_writable(self.root / "runs")
        except OSError as error:
            raise ConfigError(
                f"results folder {str(self.root)!r} is not writable ({error.strerror}); "
                f"set results_dir=PATH to a folder you can write to."
            ) from None

    def _check_writable(self, action: str) -> None:
        if self.read_only:
            raise ConfigError(
                f"cannot {action}: the run store under {str(self.root)!r} was opened read-only, for reading records. "
                f"Open it with RunStore({str(self.root)!r}) to train and write runs."
            )

    def run_dir(self, spec: RunSpec) -> Path:
        return self.root / "runs" / spec.id

    def record(self, spec_or_id: RunSpec | str) -> dict | None:
        """Return the final record of a run, or None if it has not completed (or has no id)."""
        run_id = spec_or_id.id if isinstance(spec_or_id, RunSpec) else spec_or_id
        if not run_id:
            return None
        path = self.root / "runs" / run_id / "record.json"
        if not path.exists():
            return None
        with path.open() as handle:
            return json.load(handle)

    def records(self) -> Iterator[dict]:
        """Yield every complete record in the store, in id order."""
        for path in sorted((self.root / "runs").glob("*/record.json")):
            with path.open() as handle:
                yield json.load(handle)

    def lock(self, spec: RunSpec):
        """Hold an exclusive lock on a run, so that parallel sweep members train it once."""
        self._check_writable(f"lock run {spec.id}")
        waiting = f"run {spec.id} ({spec.role}) is being trained by another process; waiting to reuse its record"
        return folder_lock(self.run_dir(spec), waiting)

    def get_or_run(self, spec: RunSpec, train: Callable[[RunSpec, Path], dict], main: bool = True) -> tuple[dict, bool]:
        """Return `(record, reused)`: the stored record, or the record of a new run of `train`.

        `train(spec, run_dir)` trains the run (resuming from `run_dir/checkpoint` when present)
        and returns its record; the store adds provenance and writes it atomically. In a
        multi-process run every process trains, but only the main one (`main=True`) takes the lock
        and writes, because the others must not wait on a lock while the main one waits on them.
        """
        self._check_writable(f"train run {spec.id} ({spec.role})")
        if not main:
            existing = self.record(spec)
            if existing is not None and existing.get("status") == "complete":
                return existing, True
            return {**train(spec, self.run_dir(spec)), "id": spec.id, "spec": spec.to_dict()}, False

        with self.lock(spec):
            existing = self.record(spec)
            if existing is not None and existing.get("status") == "complete":
                log.info("run %s (%s): reusing the stored record", spec.id, spec.role)
                return existing, True

            directory = self.run_dir(spec)
            write_json_atomic(directory / "spec.json", spec.to_dict())
            record = train(spec, directory)
            record = {**record, "id": spec.id, "spec": spec.to_dict(), **provenance()}
            write_json_atomic(directory / "record.json", record)
            if record.get("status") == "complete":
                shutil.rmtree(directory / "checkpoint", ignore_errors=True)
            return record, False
