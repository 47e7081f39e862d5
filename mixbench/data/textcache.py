"""Extraction of built-in domains, cached as JSON lines under `<cache_dir>/text/`.

A cache entry is keyed by the domain, the extraction code's version, the byte cap, the versions
and RECORD digests of the installed packages it reads and the pinned digests of the archives it
reads. A file edited in place inside an installed package, without a reinstall, is not noticed.
"""

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from mixbench.data import installed
from mixbench.data.archives import ARCHIVES
from mixbench.data.documents import Document, cap_documents, document_line, documents_digest
from mixbench.data.sources import BUILTIN_DOMAINS
from mixbench.errors import DataError

logger = logging.getLogger("mixbench.data")

# Bump when an extractor changes its output, so that cached text is rebuilt.
EXTRACTION_VERSION = 1


def load_builtin_domain(
    domain: str, max_bytes: int | None, cache_dir: Path
) -> tuple[list[Document], dict[str, Any]]:
    """Return the documents of a built-in domain and its metadata, from the cache if present."""
    spec = BUILTIN_DOMAINS[domain]
    packages = {name: installed.package_fingerprint(name) for name in spec.packages}
    key_fields = {
        "domain": domain,
        "extraction_version": EXTRACTION_VERSION,
        "max_bytes": max_bytes,
        "packages": packages,
        "archives": {name: ARCHIVES[name].members_sha256 for name in spec.archives},
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    text_path = cache_dir / "text" / f"{domain}-{key}.jsonl"
    info_path = text_path.with_suffix(".json")

    cached = _read_cache(text_path, info_path)
    if cached is not None:
        return cached

    candidates = spec.build(cache_dir / "archives")
    try:
        documents = list(cap_documents(candidates, max_bytes))
    finally:
        candidates.close()  # stops a builder's worker processes when the cap ends reading early
    if not documents:
        raise DataError(
            f"the built-in domain {domain!r} yielded no document within "
            f"max_bytes_per_domain={max_bytes}: raise the cap."
        )
    info = {
        "source": spec.source,
        "licence": spec.licence,
        "package_versions": {name: fields["version"] for name, fields in packages.items()},
        "archives": {
            name: f"{ARCHIVES[name].package}=={ARCHIVES[name].version}" for name in spec.archives
        },
        "documents": len(documents),
        "bytes": sum(len(document.text.encode("utf-8")) for document in documents),
        "sha256": documents_digest(documents),
    }
    _write_cache(text_path, info_path, documents, info)
    logger.info(
        "built domain %s: %d documents, %d bytes (%s)",
        domain, info["documents"], info["bytes"], spec.source,
    )  # fmt: skip
    return documents, info


def _read_cache(text_path: Path, info_path: Path) -> tuple[list[Document], dict] | None:
    if not (text_path.is_file() and info_path.is_file()):
        return None
    data = text_path.read_bytes()
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        logger.warning("cached text %s does not match its digest; extracting it again", text_path)
        return None
    # Split on b"\n" only: str.splitlines would also split at U+2028 inside a JSON string.
    documents = [Document(*json.loads(line)) for line in data.split(b"\n") if line]
    return documents, info


def _write_cache(text_path: Path, info_path: Path, documents: list[Document], info: dict) -> None:
    text_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(text_path, b"".join(document_line(document) for document in documents))
    atomic_write_bytes(info_path, json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
