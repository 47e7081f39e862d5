"""Token shards: one flat binary file of token ids per domain and split, checked by sha256."""

import hashlib
from pathlib import Path

import numpy as np

from mixbench.errors import DataError

SHARD_DIR = "shards"


def shard_name(domain: str, split: str) -> str:
    """Return the path of a shard relative to the corpus directory."""
    return f"{SHARD_DIR}/{domain}.{split}.bin"


def write_shard(corpus_dir: Path, domain: str, split: str, tokens: np.ndarray) -> dict:
    """Write tokens as raw little-endian ids and return the shard's file, size and sha256."""
    name = shard_name(domain, split)
    path = corpus_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(tokens, dtype=tokens.dtype.newbyteorder("<")).tobytes()
    path.write_bytes(data)
    return {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_sha256(path: Path) -> str:
    """Return the sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def verify_shard(corpus_dir: Path, record: dict) -> None:
    """Raise DataError if a shard is missing, or differs in size or sha256 from its record."""
    path = corpus_dir / record["file"]
    fix = f"Delete {corpus_dir} and run `mixbench prepare` again."
    if not path.is_file():
        raise DataError(f"token shard {path} is missing. {fix}")
    size = path.stat().st_size
    if size != record["size"]:
        raise DataError(
            f"token shard {path} has {size} bytes but {record['size']} were written "
            f"(truncated or overwritten). {fix}"
        )
    digest = file_sha256(path)
    if digest != record["sha256"]:
        raise DataError(
            f"token shard {path} is corrupt: its sha256 is {digest}, expected {record['sha256']}. {fix}"
        )


def open_shard(corpus_dir: Path, record: dict, dtype: np.dtype) -> np.ndarray:
    """Map a shard read-only into memory as a 1-D array of token ids."""
    path = corpus_dir / record["file"]
    size = path.stat().st_size if path.is_file() else None
    if size != record["size"]:
        raise DataError(
            f"token shard {path} has {size} bytes, expected {record['size']}. Delete "
            f"{corpus_dir} and run `mixbench prepare` again."
        )
    if record["size"] == 0:
        return np.empty(0, dtype=dtype)
    little_endian = dtype.newbyteorder("<")
    return np.memmap(path, dtype=little_endian, mode="r", shape=(record["size"] // dtype.itemsize,))
