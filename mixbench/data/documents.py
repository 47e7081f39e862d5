"""Documents, the byte cap per domain, the content digest and the train/val/test split.

A document is the unit that is never cut: a source file, a Wikipedia article, a Bible chapter,
a licence text, a `.po` catalogue, or one record of a user's file. Capping and splitting both
work on whole documents and order them by a hash of their id, so the result does not depend on
the order in which a source lists them.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from mixbench.errors import DataError

SPLITS = ("train", "val", "test")
# Name of the split rule below; part of every fingerprint, so change it when the rule changes.
SPLIT_METHOD = "sha256-rank-bytes-v1"

# Salt of the hash that orders documents before the byte cap takes whole documents in turn.
_CAP_SALT = "mixbench-cap"
# A split may overshoot its fraction by one document, so small deviations are normal. A split
# whose share of the domain's bytes is off by more than this factor, either way, leaves train
# with much less text than configured or makes val or test rest on a few documents.
SPLIT_SKEW_FACTOR = 2.0
# Deviations below this share of the domain's bytes are ignored, so that a small fraction such as
# 0.01 does not warn when one ordinary document takes 0.03 of the domain.
SPLIT_SKEW_MIN_DIFFERENCE = 0.05


class Document(NamedTuple):
    """One unit of text with an id that is unique within its domain."""

    id: str
    text: str


def normalize_text(text: str) -> str:
    """Return `text` with Unix line endings and without leading or trailing whitespace."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def cap_order_key(doc_id: str) -> str:
    """Return the sort key that decides which documents the byte cap keeps first."""
    return hashlib.sha256(f"{_CAP_SALT}\0{doc_id}".encode()).hexdigest()


def sort_for_cap(doc_ids: Iterable[str]) -> list[str]:
    """Return the ids in the deterministic order in which the byte cap considers them."""
    return sorted(doc_ids, key=lambda doc_id: (cap_order_key(doc_id), doc_id))


def cap_documents(documents: Iterable[Document], max_bytes: int | None) -> Iterator[Document]:
    """Yield whole documents, in the given order, until `max_bytes` UTF-8 bytes are taken.

    A document that does not fit in the remaining budget is skipped and later, smaller ones may
    still fill it. Iteration stops once less than 0.5% of the budget is left, so a lazy source
    is not read to its end. Empty documents are dropped. `max_bytes=None` keeps everything.
    """
    taken_bytes = 0
    slack = 0 if max_bytes is None else max(1, max_bytes // 200)
    for document in documents:
        size = len(document.text.encode("utf-8"))
        if size == 0:
            continue
        if max_bytes is not None and taken_bytes + size > max_bytes:
            continue
        taken_bytes += size
        yield document
        if max_bytes is not None and max_bytes - taken_bytes < slack:
            return


def check_unique_ids(domain: str, documents: list[Document]) -> None:
    """Raise DataError if two documents of `domain` share an id."""
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise DataError(
                f"domain {domain!r} has two documents with the id {document.id!r}. "
                "Document ids decide the split, so each must be unique: rename one of the sources."
            )
        seen.add(document.id)


def documents_digest(documents: Iterable[Document]) -> str:
    """Return the sha256 of the documents' ids and texts, in order (the text cache's bytes)."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document_line(document))
    return digest.hexdigest()


def document_line(document: Document) -> bytes:
    """Return the canonical JSON line of a document, as stored in the text cache."""
    return json.dumps([document.id, document.text], ensure_ascii=False).encode("utf-8") + b"\n"


def split_documents(
    domain: str,
    documents: list[Document],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, list[Document]]:
    """Assign each whole document to train, val or test, deterministically.

    Documents are ranked by sha256 of (seed, id). Test takes documents in rank order until it
    has at least `test_fraction` of the domain's UTF-8 bytes, then val until it has
    `val_fraction`, and train takes the rest. Each split gets at least one document, and a
    split may overshoot its fraction by up to one document. Each split keeps the documents in
    their original order.
    """
    count = len(documents)
    if count < len(SPLITS):
        raise DataError(
            f"domain {domain!r} has {count} document(s), too few to split: train, val and test "
            f"need at least one each, so at least {len(SPLITS)} documents. Add documents to "
            f"{domain!r} (for example split a large file into several)."
        )

    def rank_key(index: int) -> str:
        return hashlib.sha256(f"{seed}\0{documents[index].id}".encode()).hexdigest()

    sizes = [len(document.text.encode("utf-8")) for document in documents]
    total = sum(sizes)
    ranked = sorted(range(count), key=rank_key)
    assignment = dict.fromkeys(range(count), "train")
    position = 0
    for split, fraction, keep_for_later in (("test", test_fraction, 2), ("val", val_fraction, 1)):
        target_bytes = fraction * total
        split_bytes = 0
        first = position
        while position < count - keep_for_later:
            if position > first and split_bytes >= target_bytes:
                break
            assignment[ranked[position]] = split
            split_bytes += sizes[ranked[position]]
            position += 1

    splits: dict[str, list[Document]] = {split: [] for split in SPLITS}
    for index, document in enumerate(documents):
        splits[assignment[index]].append(document)
    return splits


def split_skew_warning(
    domain: str,
    splits: dict[str, list[Document]],
    val_fraction: float,
    test_fraction: float,
    explain: bool = True,
) -> str | None:
    """Return a warning if a split's share of the domain's bytes is far from its fraction.

    Returns None when every split is within SPLIT_SKEW_FACTOR of its configured fraction or
    differs from it by at most SPLIT_SKEW_MIN_DIFFERENCE. With `explain=False` the warning is
    its first sentence only, without the largest document and the fix.
    """
    configured = {
        "train": 1 - val_fraction - test_fraction,
        "val": val_fraction,
        "test": test_fraction,
    }
    sizes = {split: [len(d.text.encode("utf-8")) for d in splits[split]] for split in SPLITS}
    total = sum(sum(split_sizes) for split_sizes in sizes.values())
    if total == 0:
        return None
    actual = {split: sum(sizes[split]) / total for split in SPLITS}
    if not any(_is_skewed(actual[split], configured[split]) for split in SPLITS):
        return None

    documents = [document for split in SPLITS for document in splits[split]]
    summary = (
        f"domain {domain!r}: the split of its {len(documents)} documents gave train/val/test "
        f"{_format_shares(actual)} of its bytes, far from the configured "
        f"{_format_shares(configured)}."
    )
    if not explain:
        return summary
    largest = max(documents, key=lambda document: len(document.text.encode("utf-8")))
    largest_share = len(largest.text.encode("utf-8")) / total
    return (
        f"{summary} Its largest document, {largest.id!r}, contains "
        f"{largest_share:.3f} of the domain's bytes, "
        "and each document goes whole into one split. Split large files into smaller documents, "
        f"or add documents to {domain!r}."
    )


def _is_skewed(actual: float, configured: float) -> bool:
    if abs(actual - configured) <= SPLIT_SKEW_MIN_DIFFERENCE:
        return False
    return actual > configured * SPLIT_SKEW_FACTOR or actual < configured / SPLIT_SKEW_FACTOR


def _format_shares(shares: dict[str, float]) -> str:
    return "/".join(f"{shares[split]:.3f}" for split in SPLITS)
