"""User domains: one folder per domain, or a Hugging Face dataset saved with `save_to_disk`.

Supported files in a domain folder (searched recursively, hidden files skipped):
- `.txt`: the whole file is one document;
- `.jsonl` and `.jsonl.gz`: one JSON object per line, its text field is one document;
- `.parquet`: one document per row of the text column (needs pyarrow).
"""

import codecs
import difflib
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mixbench.data.config import DOMAIN_NAME_PATTERN, DataSettings
from mixbench.data.documents import (
    Document,
    cap_documents,
    check_unique_ids,
    documents_digest,
    normalize_text,
    sort_for_cap,
)
from mixbench.errors import DataError, unknown_name_error

logger = logging.getLogger("mixbench.data")

SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
_FORMATS_FIX = "Install the optional formats with `pip install mixbench[formats]`."


def load_folder_domains(settings: DataSettings) -> dict[str, tuple[list[Document], dict]]:
    """Read each requested domain folder under `settings.path` into capped documents."""
    root = settings.path
    if not root.is_dir():
        raise DataError(
            f"data.path {root} is not a directory. Point it to a folder with one sub-folder "
            "per domain (for example data/python/*.txt, data/wiki/*.jsonl)."
        )
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not available:
        raise DataError(f"data.path {root} has no sub-folders: create one sub-folder per domain.")
    domains = settings.domains or tuple(available)

    loaded = {}
    for domain in domains:
        if domain not in available:
            missing = [name for name in domains if name not in available]
            close = [match for name in missing for match in difflib.get_close_matches(name, available, n=1)]
            hint = f" Did you mean {', '.join(repr(name) for name in close)}?" if close else ""
            raise DataError(
                f"data.path {root} has no folder for domain(s) {', '.join(repr(name) for name in missing)}, which "
                f"data.domains lists.{hint} Its folders are {', '.join(available)}: point data.path to the folder "
                "that holds one sub-folder per domain, or list only those in data.domains."
            )
        _check_domain_name(domain, root / domain)
        documents = _read_domain_folder(root / domain, settings.text_column)
        loaded[domain] = _finish_domain(
            domain, documents, settings.max_bytes_per_domain, f"folder {root / domain}"
        )
    return loaded


def load_hf_disk_domains(settings: DataSettings) -> dict[str, tuple[list[Document], dict]]:
    """Read a dataset saved with `datasets.save_to_disk`, grouping rows by the domain column."""
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DataError(f"data.source=hf_disk needs the `datasets` package. {_FORMATS_FIX}") from None
    try:
        dataset = load_from_disk(str(settings.path))
    except FileNotFoundError as error:
        # datasets 5.2 ends some of these messages with a period and others without.
        reason = str(error).rstrip(".")
        raise DataError(
            f"cannot load a dataset from data.path {settings.path}: {reason}. Point it to a "
            "directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."
        ) from error
    except OSError as error:
        raise _damaged_dataset(settings.path, error) from None

    if hasattr(dataset, "keys"):  # a DatasetDict: every split's rows are read
        parts = [(name, dataset[name]) for name in sorted(dataset)]
        if len(parts) > 1:
            logger.info(
                "the dataset at %s has the splits %s; mixbench reads the rows of all of them and splits each "
                "domain into train/val/test by document itself (data.val_fraction, data.test_fraction).",
                settings.path, ", ".join(name for name, _ in parts),
            )
    else:
        parts = [("", dataset)]
    by_domain: dict[str, list[Document]] = {}
    for part_name, part in parts:
        for column in (settings.domain_column, settings.text_column):
            if column not in part.column_names:
                raise DataError(
                    f"the dataset at {settings.path} has no column {column!r}; its columns are "
                    f"{part.column_names}. Set data.domain_column and data.text_column."
                )
        try:
            _group_rows_by_domain(part_name, part, settings, by_domain)
        except OSError as error:
            raise _damaged_dataset(settings.path, error) from None

    available = sorted(by_domain)
    domains = settings.domains or tuple(available)
    loaded = {}
    for domain in domains:
        if domain not in by_domain:
            error = unknown_name_error(
                "domain", domain, available, f"Values of column {settings.domain_column!r}."
            )
            raise DataError(str(error))
        _check_domain_name(domain, settings.path)
        loaded[domain] = _finish_domain(
            domain, by_domain[domain], settings.max_bytes_per_domain, f"dataset {settings.path}"
        )
    return loaded


def _damaged_dataset(path: Path, error: OSError) -> DataError:
    # pyarrow reports a cut-short or damaged .arrow file as an OSError.
    return DataError(
        f"the dataset at data.path {path} cannot be read ({str(error).rstrip('.')}): one of its "
        ".arrow files is cut short or damaged. Save the dataset again with `save_to_disk`."
    )


def _group_rows_by_domain(
    part_name: str, part, settings: DataSettings, by_domain: dict[str, list[Document]]
) -> None:
    """Append the rows of one dataset split to `by_domain`, keyed by their domain name.

    A ClassLabel domain column gives its label names. Rows without a domain (null, or the
    ClassLabel value -1 that marks a missing label) raise DataError, because no domain can be
    chosen for them.
    """
    from datasets import ClassLabel

    feature = part.features[settings.domain_column]
    label_names = feature.names if isinstance(feature, ClassLabel) else None
    split_note = f" of split {part_name!r}" if part_name else ""
    unlabelled_rows = []
    for row, (domain, text) in enumerate(_iter_rows(part, settings)):
        if label_names is not None and domain is not None:
            domain = label_names[domain] if 0 <= domain < len(label_names) else None
        if domain is None:
            unlabelled_rows.append(row)
            continue
        if not isinstance(text, str):
            raise DataError(
                f"row {row}{split_note} of {settings.path} has a {settings.text_column!r} value "
                f"of type {type(text).__name__}, expected a string."
            )
        doc_id = f"{part_name}:{row}" if part_name else str(row)
        by_domain.setdefault(str(domain), []).append(Document(doc_id, normalize_text(text)))

    if unlabelled_rows:
        listed_rows = ", ".join(str(row) for row in unlabelled_rows[:5])
        more = f" and {len(unlabelled_rows) - 5} more" if len(unlabelled_rows) > 5 else ""
        missing = "null or -1 (no class label)" if label_names is not None else "null"
        raise DataError(
            f"{len(unlabelled_rows)} row(s){split_note} of {settings.path} have no domain: column "
            f"{settings.domain_column!r} is {missing} in rows {listed_rows}{more}. "
            "Give every row a domain, or drop those rows (for example with "
            "`dataset.filter(...)`) and save the dataset again."
        )


def _iter_rows(part, settings: DataSettings) -> Iterator[tuple[Any, Any]]:
    columns = part.select_columns([settings.domain_column, settings.text_column])
    for batch in columns.iter(batch_size=1000):
        yield from zip(batch[settings.domain_column], batch[settings.text_column])


def _check_domain_name(domain: str, where: Path) -> None:
    if not DOMAIN_NAME_PATTERN.match(domain):
        raise DataError(
            f"invalid domain name {domain!r} in {where}: domain names become file names, so use "
            "letters, digits, '_', '+' or '-', starting with a letter or digit. Rename it."
        )


def _finish_domain(
    domain: str, documents: list[Document], max_bytes: int | None, source: str
) -> tuple[list[Document], dict]:
    """Cap a user domain, check that it has text, and describe it for the metadata."""
    check_unique_ids(domain, documents)
    by_id = {document.id: document for document in documents}
    capped = list(cap_documents((by_id[i] for i in sort_for_cap(by_id)), max_bytes))
    if not capped:
        reason = "holds no text" if all(not d.text for d in documents) else (
            f"has no document of at most max_bytes_per_domain={max_bytes} bytes"
        )
        raise DataError(
            f"domain {domain!r} ({source}) {reason}: found {len(documents)} document(s). Add "
            "non-empty documents, or leave the domain out of data.domains."
        )
    kept_bytes = sum(len(d.text.encode("utf-8")) for d in capped)
    total_bytes = sum(len(d.text.encode("utf-8")) for d in documents)
    if kept_bytes < total_bytes:
        logger.warning(
            "domain %s (%s): data.max_bytes_per_domain=%d keeps %d of its %d documents (%.1f of %.1f MB, "
            "whole documents in a fixed pseudo-random order); set data.max_bytes_per_domain=null to keep all.",
            domain, source, max_bytes, len(capped), len(documents), kept_bytes / 1e6, total_bytes / 1e6,
        )
    info = {
        "source": source,
        "licence": "as provided by the user",
        "package_versions": {},
        "documents": len(capped),
        "bytes": kept_bytes,
        "sha256": documents_digest(capped),
    }
    return capped, info


def _read_domain_folder(folder: Path, text_column: str) -> list[Document]:
    documents = []
    files = sorted(
        path for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )  # fmt: skip
    for path in files:
        relative = path.relative_to(folder).as_posix()
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"the file name {str(path)!r} is not valid UTF-8 (document ids are made from file "
                "names). Rename the file, for example with `convmv -f latin1 -t utf-8`."
            ) from None
        name = path.name.lower()
        if name.endswith(".txt"):
            text = _decode_text_file(path)
            documents.append(Document(relative, normalize_text(text)))
        elif name.endswith((".jsonl", ".jsonl.gz")):
            documents.extend(_read_jsonl(path, relative, text_column))
        elif name.endswith(".parquet"):
            documents.extend(_read_parquet(path, relative, text_column))
        else:
            raise DataError(
                f"unsupported file {path}: domain folders may hold {', '.join(SUPPORTED_SUFFIXES)} "
                "files. Convert or move it."
            )
    return documents


def _decode_text_file(path: Path) -> str:
    """Return the text of a UTF-8 file, raising DataError for binary or otherwise encoded files."""
    data = path.read_bytes()
    # NUL is valid UTF-8 but rare in text files, while executables and images are full of it.
    nul_offset = data.find(b"\0")
    if nul_offset >= 0:
        raise DataError(
            f"{path} is a binary file (it contains a NUL byte at offset {nul_offset}), not UTF-8 "
            "text. Remove it from the domain folder or rename it to start with '.' to skip it. "
            "If it is UTF-16 text, convert it with `iconv -f utf-16 -t utf-8`."
        )
    # A byte-order mark at the start is not text.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path} contains invalid UTF-8: byte 0x{data[error.start]:02x} at offset {error.start} "
            f"(line {line}) cannot be decoded. Convert the file to UTF-8, for example with "
            "`iconv -f latin1 -t utf-8` for a Latin-1 file."
        ) from None


def _read_jsonl(path: Path, relative: str, text_column: str) -> Iterator[Document]:
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as file:
            yield from _parse_jsonl(file, path, relative, text_column)
        return
    # gzip reads lazily, so a damaged archive fails on the first or the last lines read.
    try:
        with gzip.open(path, "rb") as file:
            yield from _parse_jsonl(file, path, relative, text_column)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(
            f"{path} is not a valid gzip file ({type(error).__name__}: {error}). Check it with "
            "`gzip -t`: write a truncated file again, and rename an uncompressed JSON Lines file "
            "to .jsonl."
        ) from None


def _parse_jsonl(file: BinaryIO, path: Path, relative: str, text_column: str) -> Iterator[Document]:
    for line_number, raw_line in enumerate(file, start=1):
        if line_number == 1:
            # A byte-order mark may start the file; it is not part of the first record.
            raw_line = raw_line.removeprefix(codecs.BOM_UTF8)
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path}, line {line_number}: invalid UTF-8 (byte 0x{raw_line[error.start]:02x} "
                f"at column {error.start + 1}). JSON Lines files must be UTF-8: convert the file, "
                "for example with `iconv -f latin1 -t utf-8` for a Latin-1 file."
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {line_number}: invalid JSON ({error}).") from None
        if not isinstance(record, dict) or text_column not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(
                f"{path}, line {line_number}: expected a JSON object with a {text_column!r} "
                f"field, found {keys}. Add the field or set data.text_column."
            )
        text = record[text_column]
        if not isinstance(text, str):
            raise DataError(
                f"{path}, line {line_number}: field {text_column!r} is a "
                f"{type(text).__name__}, expected a string."
            )
        yield Document(f"{relative}:{line_number}", normalize_text(text))


def _read_parquet(path: Path, relative: str, text_column: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow. {_FORMATS_FIX}") from None
    import pyarrow

    try:
        schema = parquet.read_schema(path)
        if text_column not in schema.names:
            raise DataError(
                f"{path} has no column {text_column!r}; its columns are {schema.names}. "
                "Set data.text_column."
            )
        texts = parquet.read_table(path, columns=[text_column]).column(text_column).to_pylist()
    except (pyarrow.ArrowException, OSError) as error:
        # A cut-short file raises ArrowInvalid, damaged compressed pages a plain OSError.
        raise DataError(
            f"{path} is not a readable Parquet file ({str(error).rstrip('.')}). Write the file "
            "again if it is truncated or damaged, or remove it from the domain folder."
        ) from None
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(
                f"{path}, row {row}: column {text_column!r} has a value of type "
                f"{type(text).__name__}, expected a string."
            )
        yield Document(f"{relative}:{row}", normalize_text(text))
