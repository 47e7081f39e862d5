"""Shared fixtures: a small corpus of real text from installed packages, and tiny model settings."""

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

# Results are bit-identical only at a fixed thread count; tests use one thread.
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _real_text_folders(root: Path) -> Path:
    """Write three domains of real text, copied from files that installed packages ship."""
    torch_dir = Path(torch.__file__).parent
    sources = {
        "python": sorted((torch_dir / "nn" / "modules").glob("*.py"))[:12],
        "cpp": sorted((torch_dir / "include" / "ATen" / "core").glob("*.h"))[:24],
        # Licence files next to torch's install, found also from a virtual environment with system packages.
        "legal": sorted(torch_dir.parent.glob("*.dist-info/LICENSE*"))[:30],
    }
    for domain, files in sources.items():
        assert len(files) >= 6, f"too few {domain} files found to build the test corpus"
        target = root / domain
        target.mkdir(parents=True)
        for index, path in enumerate(files):
            shutil.copyfile(path, target / f"{index:03d}-{path.name}.txt")
    return root


@pytest.fixture(scope="session")
def text_folders(tmp_path_factory) -> Path:
    return _real_text_folders(tmp_path_factory.mktemp("domains"))


def folder_data_config(path: Path, cache: Path, **changes) -> dict:
    config = {
        "name": "test",
        "source": "folders",
        "domains": None,
        "path": str(path),
        "domain_column": "domain",
        "text_column": "text",
        "max_bytes_per_domain": 400_000,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "split_seed": 0,
        "tokenizer": {"kind": "byte", "vocab_size": 4096, "path": None},
        "cache_dir": str(cache),
    }
    config.update(changes)
    return config


@pytest.fixture(scope="session")
def small_corpus(text_folders, tmp_path_factory):
    from mixbench.data import prepare_corpus

    return prepare_corpus(folder_data_config(text_folders, tmp_path_factory.mktemp("cache")))


TINY_MODEL = {"family": "gpt2", "d_model": 32, "n_layer": 1, "n_head": 2, "d_ff": 64, "context": 32, "dropout": 0.0, "attention": "sdpa"}

TINY_TRAIN = {
    "steps": 12,
    "batch_size": 8,
    "grad_accumulation": 1,
    "lr": 3e-3,
    "min_lr_ratio": 0.1,
    "warmup_steps": 2,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "sampling": "multinomial",
    "loss_normalization": "token_mean",
    "bf16": False,
    "eval_every": 4,
    "eval_tokens": 512,
    "eval_batch_size": 16,
    "checkpoint_every": 4,
    "threads": 1,
}


@pytest.fixture
def tiny_setting(small_corpus):
    from mixbench.setting import CorpusSetting

    return CorpusSetting("test", small_corpus, small_corpus.domains, dict(TINY_MODEL), dict(TINY_TRAIN))


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Run CLI commands in a temporary working folder with one torch thread."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def tree_state(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Map every path under `root`, itself included, to (is a folder, size, modification time in ns).

    Creating or deleting an entry changes its folder's modification time, so a probe file that was
    written and removed again still shows.
    """
    return {str(path.relative_to(root)): (path.is_dir(), path.stat().st_size, path.stat().st_mtime_ns)
            for path in [root, *sorted(root.rglob("*"))]}


@pytest.fixture
def read_only(monkeypatch):
    """Provide a function that makes a folder tree read-only to mixbench, and restore its permissions afterwards.

    The function clears the tree's write permission bits. Root writes through those, so it also makes
    mixbench.runs.probe_writable, the check before mixbench writes to a folder, fail inside the tree
    as on a read-only mount (EROFS). Compare `tree_state` before and after to catch writes that skip the check.
    """
    from mixbench import runs

    modes: dict[Path, int] = {}
    protected: list[Path] = []
    probe = runs.probe_writable

    def reject_inside(folder) -> None:
        folder = Path(folder).resolve()
        if any(folder == root or root in folder.parents for root in protected):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
        probe(folder)

    def protect(root: Path) -> None:
        root = Path(root).resolve()
        for path in [root, *root.rglob("*")]:
            modes[path] = stat.S_IMODE(path.stat().st_mode)
            path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        protected.append(root)

    monkeypatch.setattr(runs, "probe_writable", reject_inside)
    yield protect
    for path, mode in modes.items():
        path.chmod(mode)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
