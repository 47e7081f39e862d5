"""A prepared corpus on disk: metadata.json, the tokenizer files and memory-mapped token shards."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.data.documents import SPLITS
from mixbench.data.shards import open_shard, verify_shard
from mixbench.data.tokenizer import load_saved_tokenizer
from mixbench.errors import DataError, unknown_name_error

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1


class Corpus:
    """Token shards of every domain and split of one prepared corpus, with their tokenizer.

    Use `prepare_corpus` or `load_corpus` to obtain one rather than calling this directly.
    """

    def __init__(self, path: Path, metadata: dict[str, Any]):
        self.path = Path(path)
        self.metadata = metadata
        self.domains: tuple[str, ...] = tuple(metadata["domain_order"])
        self.fingerprint: str = metadata["fingerprint"]
        tokenizer = metadata["tokenizer"]
        self.tokenizer_id: str = tokenizer["id"]
        self.vocab_size: int = tokenizer["vocab_size"]
        self.dtype = np.dtype(tokenizer["dtype"])
        self._tokenizer = None
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        # Set by prepare_corpus when it returned a corpus prepared earlier, whose warnings were logged then.
        self.reused = False

    @property
    def root(self) -> Path:
        """The corpus directory, the same as `path`."""
        return self.path

    def __repr__(self) -> str:
        return (
            f"Corpus({str(self.path)!r}, domains={list(self.domains)}, "
            f"tokenizer={self.tokenizer_id!r}, fingerprint={self.fingerprint[:16]!r})"
        )

    def _split_record(self, domain: str, split: str) -> dict[str, Any]:
        if domain not in self.metadata["domains"]:
            raise unknown_name_error("domain", domain, self.domains)
        if split not in SPLITS:
            raise unknown_name_error("split", split, SPLITS)
        return self.metadata["domains"][domain]["splits"][split]

    def tokens(self, domain: str, split: str) -> np.ndarray:
        """Return the read-only memory-mapped token ids of one domain and split."""
        key = (domain, split)
        if key not in self._arrays:
            self._arrays[key] = open_shard(self.path, self._split_record(domain, split), self.dtype)
        return self._arrays[key]

    def num_tokens(self, domain: str, split: str) -> int:
        """Return the number of tokens in one domain and split."""
        return int(self._split_record(domain, split)["tokens"])

    def bytes_per_token(self, domain: str, split: str) -> float:
        """Return UTF-8 bytes of the split's text per token, to turn a loss into bits per byte."""
        record = self._split_record(domain, split)
        return record["bytes"] / record["tokens"] if record["tokens"] else float("nan")

    def check_min_tokens(self, n: int) -> None:
        """Raise DataError if any domain split has fewer than `n` tokens."""
        short = [
            f"domain {domain!r} split {split!r} has {self.num_tokens(domain, split)} tokens"
            for domain in self.domains
            for split in SPLITS
            if self.num_tokens(domain, split) < n
        ]
        if short:
            raise DataError(
                f"too few tokens in the corpus at {self.path}: {'; '.join(short)}, fewer than the "
                f"{n} required (for example one context window plus one). Add text to those "
                "domains, raise max_bytes_per_domain or val_fraction/test_fraction, or lower the "
                "context length or evaluation size."
            )

    @property
    def tokenizer(self):
        """The tokenizer the shards were made with, loaded from the corpus directory."""
        if self._tokenizer is None:
            self._tokenizer = load_saved_tokenizer(self.path, self.metadata["tokenizer"])
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        """Return the token ids of `text`, without special tokens."""
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Return the text of token ids."""
        return self.tokenizer.decode(ids)


def load_corpus(
    path: str | Path, expect_tokenizer_id: str | None = None, verify: bool = True
) -> Corpus:
    """Open a prepared corpus directory, checking every shard's size and sha256.

    `expect_tokenizer_id` makes it raise DataError when the shards were made by another
    tokenizer. `verify=False` skips hashing the shards (their sizes are still checked on use).
    """
    path = Path(path)
    metadata_path = path / METADATA_FILE
    fix = f"Delete {path} and run `mixbench prepare` again."
    if not metadata_path.is_file():
        raise DataError(
            f"no prepared corpus at {path}: {METADATA_FILE} is missing. Run `mixbench prepare` "
            "and pass the directory it reports."
        )
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{metadata_path} is not valid JSON ({error}). {fix}") from error
    if metadata.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{metadata_path} has format version {metadata.get('format_version')!r}, but this "
            f"mixbench reads version {FORMAT_VERSION}. {fix}"
        )

    recorded = metadata["tokenizer"]["id"]
    if expect_tokenizer_id is not None and expect_tokenizer_id != recorded:
        raise DataError(
            f"the corpus at {path} was tokenized with {recorded!r}, not the expected "
            f"{expect_tokenizer_id!r}. Prepare the corpus with the tokenizer you want "
            "(`mixbench prepare data.tokenizer.kind=...`) and use the directory it reports."
        )

    for domain in metadata["domain_order"]:
        for split in SPLITS:
            record = metadata["domains"][domain]["splits"][split]
            if verify:
                verify_shard(path, record)
            elif not (path / record["file"]).is_file():
                raise DataError(f"token shard {path / record['file']} is missing. {fix}")
    return Corpus(path, metadata)

