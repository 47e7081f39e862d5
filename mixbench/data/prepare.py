"""Preparation of a corpus: read the domains, split them, tokenize them and write the shards.

The corpus directory is `<cache_dir>/corpus/<fingerprint[:16]>/`. Its fingerprint covers every
domain's text and document ids, the split settings and the tokenizer's id, so preparing the
same data again finds the finished directory and reuses it.
"""

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import mixbench
from mixbench.data.config import DataSettings, parse_settings
from mixbench.data.corpus import FORMAT_VERSION, METADATA_FILE, Corpus, load_corpus
from mixbench.data.documents import (
    SPLIT_METHOD,
    SPLITS,
    Document,
    split_documents,
    split_skew_warning,
)
from mixbench.data.folders import load_folder_domains, load_hf_disk_domains
from mixbench.data.shards import write_shard
from mixbench.data.textcache import atomic_write_bytes, load_builtin_domain
from mixbench.data.tokenizer import (
    DOCUMENT_SEPARATOR,
    BpeTokenizer,
    ByteTokenizer,
    HfTokenizer,
    bpe_sample_warning,
    equal_bytes_sample,
    token_dtype,
    train_bpe,
)
from mixbench.errors import DataError

logger = logging.getLogger("mixbench.data")

# Bump when the BPE training recipe changes, so that cached BPE tokenizers are retrained.
BPE_RECIPE_VERSION = 1


def prepare_corpus(cfg: Any) -> Corpus:
    """Build (or reuse) the tokenized corpus that a `data` config describes.

    `cfg` is a dict or an OmegaConf DictConfig with the keys of conf/data/default.yaml; unset
    keys take those defaults. Preparing the same data twice returns the same directory.
    """
    settings = parse_settings(cfg)
    loaded = _load_domains(settings)
    splits = {
        domain: split_documents(
            domain, documents, settings.val_fraction, settings.test_fraction, settings.split_seed
        )
        for domain, (documents, _) in loaded.items()
    }
    tokenizer = _resolve_tokenizer(settings, loaded, splits)
    fingerprint = corpus_fingerprint(settings, loaded, tokenizer.id)

    corpus_dir = settings.cache_dir / "corpus" / fingerprint[:16]
    existing = _reuse_corpus(corpus_dir, fingerprint, tokenizer.id)
    if existing is not None:
        logger.info("reusing prepared corpus %s", corpus_dir)
        # The full warnings were logged when the corpus was built, so later commands log a summary.
        _log_skewed_splits(settings, splits, reused=True)
        existing.reused = True
        return existing
    _log_skewed_splits(settings, splits, reused=False)
    if corpus_dir.exists():
        # Published directories always contain metadata.json, so this one is a leftover.
        shutil.rmtree(corpus_dir)

    started = time.perf_counter()
    staging = corpus_dir.with_name(f".staging-{fingerprint[:16]}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        metadata = _write_corpus(staging, settings, loaded, splits, tokenizer, fingerprint)
        _publish(staging, corpus_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "prepared corpus %s in %.1f s (tokenizer %s)",
        corpus_dir, time.perf_counter() - started, tokenizer.id,
    )  # fmt: skip
    return Corpus(corpus_dir, metadata)


def corpus_fingerprint(settings: DataSettings, loaded: dict, tokenizer_id: str) -> str:
    """Return the sha256 that identifies a corpus: texts, split settings and tokenizer."""
    fields = {
        "format_version": FORMAT_VERSION,
        "domains": [[domain, info["sha256"]] for domain, (_, info) in loaded.items()],
        "split": _split_settings(settings),
        "tokenizer": tokenizer_id,
        "separator": DOCUMENT_SEPARATOR,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _split_settings(settings: DataSettings) -> dict[str, Any]:
    return {
        "val_fraction": settings.val_fraction,
        "test_fraction": settings.test_fraction,
        "split_seed": settings.split_seed,
        "method": SPLIT_METHOD,
    }


def _log_skewed_splits(settings: DataSettings, splits: dict, reused: bool) -> None:
    """Log one line per domain whose split sizes are far from the configured fractions.

    A new corpus gets the full warning, and a reused one its first sentence at info level.
    """
    for domain, domain_splits in splits.items():
        warning = split_skew_warning(
            domain, domain_splits, settings.val_fraction, settings.test_fraction, explain=not reused
        )
        if warning is None:
            continue
        if reused:
            logger.info("%s (warned in full when this corpus was prepared)", warning)
        else:
            logger.warning("%s", warning)


def _load_domains(settings: DataSettings) -> dict[str, tuple[list[Document], dict]]:
    if settings.source == "folders":
        return load_folder_domains(settings)
    if settings.source == "hf_disk":
        return load_hf_disk_domains(settings)
    return {
        domain: load_builtin_domain(domain, settings.max_bytes_per_domain, settings.cache_dir)
        for domain in settings.domains
    }


def _resolve_tokenizer(settings: DataSettings, loaded: dict, splits: dict):
    kind = settings.tokenizer.kind
    if kind == "byte":
        return ByteTokenizer()
    if kind == "hf":
        return HfTokenizer(settings.tokenizer.path)

    # A BPE is trained on the train splits, so its cache key covers every input of the training.
    recipe = {
        "recipe_version": BPE_RECIPE_VERSION,
        "domains": [[domain, info["sha256"]] for domain, (_, info) in loaded.items()],
        "split": _split_settings(settings),
        "vocab_size": settings.tokenizer.vocab_size,
        "sample_bytes_per_domain": settings.tokenizer.sample_bytes_per_domain,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = settings.cache_dir / "tokenizers" / f"bpe-{key}.json"
    if path.is_file():
        return BpeTokenizer.from_file(path)

    started = time.perf_counter()
    train = {domain: domain_splits["train"] for domain, domain_splits in splits.items()}
    warning = bpe_sample_warning(train, settings.tokenizer.sample_bytes_per_domain)
    if warning is not None:
        logger.warning("%s", warning)
    sample = equal_bytes_sample(train, settings.tokenizer.sample_bytes_per_domain)
    tokenizer = train_bpe(sample, settings.tokenizer.vocab_size)
    if tokenizer.vocab_size < settings.tokenizer.vocab_size:
        # BPE stops merging when no pair of tokens occurs at least twice (min_frequency) in the sample.
        logger.warning(
            "the trained BPE vocabulary has %d tokens, fewer than data.tokenizer.vocab_size=%d: the sample of %d bytes "
            "per domain has no more pairs to merge. A larger data.tokenizer.sample_bytes_per_domain or more text "
            "per domain gives more.", tokenizer.vocab_size, settings.tokenizer.vocab_size,
            sum(len(text.encode()) for text in next(iter(sample.values()))),
        )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, tokenizer.save_string().encode("utf-8"))
    logger.info(
        "trained BPE tokenizer %s on %d bytes per domain in %.1f s",
        tokenizer.id, sum(len(t.encode()) for t in next(iter(sample.values()))),
        time.perf_counter() - started,
    )  # fmt: skip
    return tokenizer


def _reuse_corpus(corpus_dir: Path, fingerprint: str, tokenizer_id: str) -> Corpus | None:
    if not (corpus_dir / METADATA_FILE).is_file():
        return None
    try:
        corpus = load_corpus(corpus_dir, expect_tokenizer_id=tokenizer_id)
    except DataError as error:
        logger.warning("rebuilding the damaged corpus %s: %s", corpus_dir, error)
        shutil.rmtree(corpus_dir)
        return None
    if corpus.fingerprint != fingerprint:
        logger.warning("rebuilding %s: its metadata records another fingerprint", corpus_dir)
        shutil.rmtree(corpus_dir)
        return None
    return corpus


def _publish(staging: Path, corpus_dir: Path) -> None:
    """Rename the finished staging directory into place, unless another process did it first."""
    try:
        os.replace(staging, corpus_dir)
    except OSError:
        if not (corpus_dir / METADATA_FILE).is_file():
            raise
        logger.info("another process prepared %s at the same time; keeping its copy", corpus_dir)


def _write_corpus(
    directory: Path,
    settings: DataSettings,
    loaded: dict[str, tuple[list[Document], dict]],
    splits: dict[str, dict[str, list[Document]]],
    tokenizer,
    fingerprint: str,
) -> dict[str, Any]:
    """Tokenize every domain split into a shard under `directory` and write metadata.json."""
    domains_metadata = {}
    for domain in tqdm(list(loaded), desc="tokenizing", unit="domain", leave=False, disable=None):
        _, info = loaded[domain]
        records = {}
        for split in SPLITS:
            texts = [document.text for document in splits[domain][split]]
            tokens = tokenizer.encode_stream(texts)
            if tokens.size and int(tokens.max()) >= tokenizer.vocab_size:
                raise DataError(
                    f"tokenizer {tokenizer.id} produced id {int(tokens.max())} on domain "
                    f"{domain!r}, outside its vocabulary of {tokenizer.vocab_size}. Use a "
                    "tokenizer whose ids are all below its length."
                )
            records[split] = {
                "documents": len(texts),
                "bytes": len(DOCUMENT_SEPARATOR.join(texts).encode("utf-8")),
                "tokens": int(tokens.size),
                **write_shard(directory, domain, split, tokens),
            }
        domains_metadata[domain] = {**info, "splits": records}
        logger.info(
            "tokenized domain %s: %s tokens (train/val/test)",
            domain, "/".join(str(records[split]["tokens"]) for split in SPLITS),
        )  # fmt: skip

    metadata = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "name": settings.name,
        "source": settings.source,
        "path": None if settings.path is None else str(settings.path),
        "max_bytes_per_domain": settings.max_bytes_per_domain,
        "split_settings": _split_settings(settings),
        "domain_order": list(loaded),
        "tokenizer": {
            "id": tokenizer.id,
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "byteorder": "little",
            "file": tokenizer.save(directory),
            "separator": DOCUMENT_SEPARATOR,
        },
        "package_versions": _package_versions(tokenizer.kind),
        "domains": domains_metadata,
    }
    text = json.dumps(metadata, indent=2, ensure_ascii=False)
    atomic_write_bytes(directory / METADATA_FILE, text.encode("utf-8"))
    return metadata


def _package_versions(tokenizer_kind: str) -> dict[str, str]:
    import numpy

    versions = {
        "mixbench": mixbench.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    if tokenizer_kind in ("bpe", "hf"):
        import tokenizers

        versions["tokenizers"] = tokenizers.__version__
    if tokenizer_kind == "hf":
        import transformers

        versions["transformers"] = transformers.__version__
    return versions
