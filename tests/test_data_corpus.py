"""Prepared corpora: reproducibility, splits, shard checks, tokenizers and config errors."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from mixbench.data import SPLITS, load_corpus, prepare_corpus
from mixbench.data.config import parse_settings
from mixbench.data.tokenizer import DOCUMENT_SEPARATOR
from mixbench.errors import ConfigError, DataError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def write_domains(root, domains):
    """Write {domain: [text, ...]} as one .txt file per document."""
    for domain, texts in domains.items():
        folder = root / domain
        folder.mkdir(parents=True, exist_ok=True)
        for index, text in enumerate(texts):
            (folder / f"{index:04d}.txt").write_text(text, encoding="utf-8")


def sample_domains(num_docs=40):
    return {
        "prose": [f"Document {i} tells the story of a village by the river, number {i}." for i in range(num_docs)],
        "code": [f"def function_{i}(x):\n    return x * {i} + {i * i}\n" for i in range(num_docs)],
        "numbers": [" ".join(str(i * k) for k in range(30)) for i in range(num_docs)],
    }  # fmt: skip


@pytest.fixture
def folder_corpus(tmp_path):
    root = tmp_path / "domains"
    write_domains(root, sample_domains())
    config = {"source": "folders", "path": str(root), "cache_dir": str(tmp_path / "cache")}
    return root, config


def shard_bytes(corpus):
    return {
        (domain, split): (corpus.path / f"shards/{domain}.{split}.bin").read_bytes()
        for domain in corpus.domains
        for split in SPLITS
    }


def test_prepare_twice_is_identical(folder_corpus, tmp_path):
    root, config = folder_corpus
    first = prepare_corpus(config)
    first_bytes = shard_bytes(first)
    other_cache = {**config, "cache_dir": str(tmp_path / "other_cache")}

    second = prepare_corpus(other_cache)

    assert second.fingerprint == first.fingerprint
    assert second.path != first.path
    assert shard_bytes(second) == first_bytes
    assert (second.path / "metadata.json").read_bytes() != b""


def test_prepare_reuses_existing_directory(folder_corpus):
    _, config = folder_corpus
    first = prepare_corpus(config)
    shard = first.path / "shards" / "prose.train.bin"
    modified = shard.stat().st_mtime_ns

    second = prepare_corpus(config)

    assert second.path == first.path
    assert shard.stat().st_mtime_ns == modified


def test_changed_text_changes_fingerprint(folder_corpus):
    root, config = folder_corpus
    before = prepare_corpus(config).fingerprint
    (root / "code" / "0003.txt").write_text("def changed():\n    pass\n")

    after = prepare_corpus(config).fingerprint

    assert after != before


def test_split_settings_change_fingerprint(folder_corpus):
    _, config = folder_corpus
    base = prepare_corpus(config).fingerprint

    assert prepare_corpus({**config, "split_seed": 1}).fingerprint != base
    assert prepare_corpus({**config, "val_fraction": 0.1}).fingerprint != base


def test_splits_are_disjoint_by_document(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus({**config, "val_fraction": 0.2, "test_fraction": 0.2})

    for domain, texts in sample_domains().items():
        per_split = {s: corpus.decode(corpus.tokens(domain, s)).split("\n\n") for s in SPLITS}
        seen = [doc for split in SPLITS for doc in per_split[split]]
        assert sorted(seen) == sorted(t.strip() for t in texts), domain
        assert len(seen) == len(set(seen)), domain
        total = sum(corpus.metadata["domains"][domain]["splits"][s]["bytes"] for s in SPLITS)
        largest = max(len(t.encode()) for t in texts)
        for split in ("val", "test"):
            split_bytes = corpus.metadata["domains"][domain]["splits"][split]["bytes"]
            assert 0.2 * total - largest <= split_bytes <= 0.2 * total + 2 * largest, (domain, split)


def test_split_seed_moves_documents(folder_corpus):
    _, config = folder_corpus
    first = prepare_corpus(config)
    second = prepare_corpus({**config, "split_seed": 7})

    first_test = set(first.decode(first.tokens("prose", "test")).split("\n\n"))
    second_test = set(second.decode(second.tokens("prose", "test")).split("\n\n"))
    assert first_test != second_test


def test_tokens_are_read_only_memmaps(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)

    tokens = corpus.tokens("prose", "train")

    assert isinstance(tokens, np.memmap)
    assert tokens.ndim == 1
    assert tokens.dtype == np.uint8
    assert not tokens.flags.writeable
    assert corpus.num_tokens("prose", "train") == tokens.size


def test_byte_tokenizer_bytes_per_token_is_one(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)

    assert corpus.tokenizer_id == "byte"
    assert corpus.vocab_size == 256
    for domain in corpus.domains:
        for split in SPLITS:
            assert corpus.bytes_per_token(domain, split) == 1.0


def test_bpe_tokenizer_compresses(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus({**config, "tokenizer": {"kind": "bpe", "vocab_size": 400}})

    assert corpus.tokenizer_id.startswith("bpe-400-")
    assert corpus.vocab_size == 400
    assert corpus.tokens("code", "train").dtype == np.uint16
    assert int(corpus.tokens("code", "train").max()) < 400
    for domain in corpus.domains:
        assert corpus.bytes_per_token(domain, "train") > 1.0
    text = "def function_5(x):\n    return x * 5 + 25\n"
    assert corpus.decode(corpus.encode(text)) == text


def test_bpe_training_is_deterministic(folder_corpus, tmp_path):
    _, config = folder_corpus
    bpe = {"kind": "bpe", "vocab_size": 400}
    first = prepare_corpus({**config, "tokenizer": bpe})
    second = prepare_corpus({**config, "tokenizer": bpe, "cache_dir": str(tmp_path / "fresh")})

    assert second.tokenizer_id == first.tokenizer_id
    assert shard_bytes(second) == shard_bytes(first)


def test_bpe_small_domain_warns(tmp_path, caplog):
    domains = sample_domains()
    domains["tiny"] = ["a short note", "another short note", "one more note", "the last note"]
    write_domains(tmp_path / "domains", domains)
    config = {"source": "folders", "path": str(tmp_path / "domains"), "cache_dir": str(tmp_path / "cache"),
              "tokenizer": {"kind": "bpe", "vocab_size": 300}}  # fmt: skip

    with caplog.at_level("WARNING", logger="mixbench.data"):
        corpus = prepare_corpus(config)

    warnings = [record.getMessage() for record in caplog.records if "BPE tokenizer" in record.getMessage()]
    assert len(warnings) == 1, warnings
    train = corpus.metadata["domains"]["tiny"]["splits"]["train"]
    # The split's bytes include the separators between its documents, which the sample leaves out.
    text_bytes = train["bytes"] - len(DOCUMENT_SEPARATOR.encode()) * (train["documents"] - 1)
    assert f"trains on {text_bytes} bytes per domain" in warnings[0]
    assert "not data.tokenizer.sample_bytes_per_domain=1000000" in warnings[0]
    assert "domain 'tiny' has only" in warnings[0]
    assert "add text to 'tiny', or leave it out of data.domains" in warnings[0]


def test_bpe_even_domains_do_not_warn(folder_corpus, caplog):
    _, config = folder_corpus

    with caplog.at_level("WARNING", logger="mixbench.data"):
        prepare_corpus({**config, "tokenizer": {"kind": "bpe", "vocab_size": 300}})

    assert not [record for record in caplog.records if "BPE" in record.getMessage()]


def test_prepare_warns_about_few_evaluation_windows(tmp_path, caplog):
    from mixbench import api

    sentence = "The river carried the old boat past the mill and the stone bridge. "
    write_domains(tmp_path / "domains", {
        "big": [f"{i} " + sentence * 130 for i in range(20)],  # about 9,000 bytes each
        "small": [f"{i} " + sentence * 22 for i in range(10)],  # about 1,500 bytes each
    })  # fmt: skip
    overrides = ["data=folders", f"data.path={tmp_path / 'domains'}", f"data.cache_dir={tmp_path / 'cache'}",
                 "data.val_fraction=0.1", "data.test_fraction=0.1"]  # fmt: skip

    with caplog.at_level("INFO", logger="mixbench"):
        corpus = api.prepare(overrides)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "windows" in r.getMessage()]

    assert len(warnings) == 1, warnings
    test_tokens = corpus.num_tokens("small", "test")
    windows = (test_tokens - 1) // 128
    assert f"small test: {windows} of the 128 windows that train.test_tokens=16384 requests" in warnings[0]
    assert "raise data.test_fraction or add text" in warnings[0]
    assert "at most 1/4 of the requested windows" in warnings[0]
    assert "big" not in warnings[0]
    assert "small val" not in warnings[0]

    # A later command on the same corpus logs the list alone, at info level.
    caplog.clear()
    with caplog.at_level("INFO", logger="mixbench"):
        api.prepare(overrides)
    lines = [r for r in caplog.records if "windows" in r.getMessage()]

    assert len(lines) == 1
    assert lines[0].levelname == "INFO"
    assert lines[0].getMessage().startswith(f"few evaluation windows: small test: {windows} of the 128 windows")


def test_hf_tokenizer_from_local_directory(folder_corpus, tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(["the village by the river"] * 50, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(tmp_path / "hf_tok")
    _, config = folder_corpus

    corpus = prepare_corpus({**config, "tokenizer": {"kind": "hf", "path": str(tmp_path / "hf_tok")}})
    reopened = load_corpus(corpus.path)

    assert corpus.tokenizer_id.startswith("hf-")
    assert corpus.vocab_size == backend.get_vocab_size()
    assert reopened.decode(reopened.encode("the river")) == "the river"
    assert reopened.decode(reopened.tokens("prose", "val")).startswith("Document ")


def test_hf_tokenizer_missing_directory_raises(folder_corpus, tmp_path):
    _, config = folder_corpus
    with pytest.raises(ConfigError, match="is not a directory"):
        prepare_corpus({**config, "tokenizer": {"kind": "hf", "path": str(tmp_path / "none")}})


def test_hf_tokenizer_folder_without_tokenizer_files_raises(folder_corpus, tmp_path):
    root, config = folder_corpus
    # A folder that exists but contains text files, such as the corpus folder itself.
    with pytest.raises(ConfigError, match=r"contains no tokenizer file \(tokenizer.json, .*save_pretrained"):
        prepare_corpus({**config, "tokenizer": {"kind": "hf", "path": str(root)}})


def test_bpe_vocabulary_below_the_requested_size_warns(folder_corpus, caplog):
    _, config = folder_corpus

    with caplog.at_level("WARNING", logger="mixbench.data"):
        corpus = prepare_corpus({**config, "tokenizer": {"kind": "bpe", "vocab_size": 60000}})

    assert corpus.vocab_size < 60000
    warnings = [r.getMessage() for r in caplog.records if "BPE vocabulary" in r.getMessage()]
    assert len(warnings) == 1
    assert f"has {corpus.vocab_size} tokens, fewer than data.tokenizer.vocab_size=60000" in warnings[0]


def test_encode_decode_round_trip(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)
    text = "naïve café — 日本語\n\ttabs"

    assert corpus.encode(text) == list(text.encode("utf-8"))
    assert corpus.decode(corpus.encode(text)) == text


def test_load_corpus_reopens(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)

    reopened = load_corpus(corpus.path)

    assert reopened.fingerprint == corpus.fingerprint
    assert reopened.domains == corpus.domains
    assert np.array_equal(reopened.tokens("code", "test"), corpus.tokens("code", "test"))


def test_corrupt_shard_raises(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)
    shard = corpus.path / "shards" / "code.val.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 0xFF
    shard.write_bytes(bytes(data))

    with pytest.raises(DataError) as error:
        load_corpus(corpus.path)

    assert "code.val.bin" in str(error.value)
    assert "corrupt" in str(error.value)
    assert f"Delete {corpus.path} and run `mixbench prepare` again" in str(error.value)


def test_truncated_shard_raises(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)
    shard = corpus.path / "shards" / "prose.train.bin"
    with open(shard, "r+b") as file:
        file.truncate(10)

    with pytest.raises(DataError, match=r"prose.train.bin has 10 bytes"):
        load_corpus(corpus.path)
    with pytest.raises(DataError, match=r"prose.train.bin has 10 bytes"):
        load_corpus(corpus.path, verify=False).tokens("prose", "train")


def test_prepare_rebuilds_damaged_corpus(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)
    shard = corpus.path / "shards" / "prose.train.bin"
    original = shard.read_bytes()
    shard.write_bytes(original[:-5])

    rebuilt = prepare_corpus(config)

    assert rebuilt.path == corpus.path
    assert shard.read_bytes() == original


def test_missing_metadata_raises(tmp_path):
    with pytest.raises(DataError, match="metadata.json is missing"):
        load_corpus(tmp_path)


def test_mismatched_tokenizer_raises(folder_corpus):
    _, config = folder_corpus
    byte_corpus = prepare_corpus(config)
    bpe_corpus = prepare_corpus({**config, "tokenizer": {"kind": "bpe", "vocab_size": 300}})

    assert bpe_corpus.path != byte_corpus.path
    with pytest.raises(DataError, match=r"tokenized with 'byte', not the expected 'bpe-300-"):
        load_corpus(byte_corpus.path, expect_tokenizer_id=bpe_corpus.tokenizer_id)
    assert load_corpus(byte_corpus.path, expect_tokenizer_id="byte").tokenizer_id == "byte"


def test_check_min_tokens(tmp_path):
    root = tmp_path / "domains"
    domains = sample_domains()
    domains["short"] = [f"s{i}" for i in range(5)]
    write_domains(root, domains)
    corpus = prepare_corpus({"source": "folders", "path": str(root), "cache_dir": str(tmp_path / "c")})

    corpus.check_min_tokens(2)
    with pytest.raises(DataError) as error:
        corpus.check_min_tokens(100)

    message = str(error.value)
    assert "domain 'short' split 'val' has 2 tokens" in message
    assert "fewer than the 100 required" in message
    assert "'prose' split 'train'" not in message


def test_metadata_records_split_sizes(folder_corpus):
    _, config = folder_corpus
    corpus = prepare_corpus(config)

    on_disk = json.loads((corpus.path / "metadata.json").read_text())
    record = on_disk["domains"]["prose"]

    assert on_disk["fingerprint"] == corpus.fingerprint
    assert sum(record["splits"][s]["documents"] for s in SPLITS) == record["documents"] == 40
    assert record["splits"]["val"]["tokens"] == corpus.num_tokens("prose", "val")
    assert "numpy" in on_disk["package_versions"]


def test_unknown_builtin_domain_suggests_names(tmp_path):
    with pytest.raises(ConfigError, match="unknown domain 'pyton'. Did you mean 'python'"):
        prepare_corpus({"domains": ["pyton", "wiki"], "cache_dir": str(tmp_path)})


def test_unknown_tokenizer_kind_raises(tmp_path):
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'bytes'. Did you mean 'byte'"):
        prepare_corpus({"tokenizer": {"kind": "bytes"}, "cache_dir": str(tmp_path)})


def test_unknown_setting_raises(tmp_path):
    with pytest.raises(ConfigError, match="unknown data setting 'val_frac'"):
        prepare_corpus({"val_frac": 0.1, "cache_dir": str(tmp_path)})


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("val_fraction", 0.0, "strictly between 0 and 1"),
        ("test_fraction", 1.5, "strictly between 0 and 1"),
        ("val_fraction", 0.6, "leaves nothing to train on"),
        ("max_bytes_per_domain", -5, "must be positive"),
        ("source", "folder", "Did you mean 'folders'"),
    ],
)
def test_invalid_settings_raise(tmp_path, key, value, pattern):
    config = {"cache_dir": str(tmp_path), "test_fraction": 0.5, key: value}
    if key == "test_fraction":
        config["val_fraction"] = 0.05
    with pytest.raises(ConfigError, match=pattern):
        prepare_corpus(config)


@pytest.mark.parametrize(
    ("source", "key", "value", "fix"),
    [
        ("builtin", "path", "/some/folder", "Use data=folders (a folder with one sub-folder per domain) or data=hf_disk"),
        ("builtin", "text_column", "body", "Use data=folders"),
        ("builtin", "domain_column", "lang", "Use data=hf_disk (a dataset written by save_to_disk), or remove"),
        ("folders", "domain_column", "lang", "Use data=hf_disk"),
    ],
)
def test_setting_ignored_by_source_raises(tmp_path, source, key, value, fix):
    cache = tmp_path / "cache"
    config = {"source": source, "cache_dir": str(cache), key: value}
    if source == "folders":
        config["path"] = str(tmp_path)

    with pytest.raises(ConfigError, match=re.escape(f"data.{key}={value} is set, but data.source={source} ignores it")) as error:
        prepare_corpus(config)

    assert fix in str(error.value)
    assert f"or remove data.{key}." in str(error.value)
    assert not cache.exists(), "the corpus was started before the settings were checked"


def test_tokenizer_path_without_hf_kind_raises(tmp_path):
    config = {"cache_dir": str(tmp_path / "cache"), "tokenizer": {"kind": "byte", "path": "/some/tokenizer"}}

    with pytest.raises(ConfigError, match="data.tokenizer.path=/some/tokenizer is set, but data.tokenizer.kind=byte ignores it"):
        prepare_corpus(config)


def test_source_settings_at_defaults_are_accepted(tmp_path):
    builtin = parse_settings({"source": "builtin", "path": "", "domain_column": "domain", "text_column": "text"})
    folders = parse_settings({"source": "folders", "path": str(tmp_path), "domain_column": "domain", "text_column": "body"})
    hf_disk = parse_settings({"source": "hf_disk", "path": str(tmp_path), "domain_column": "lang", "text_column": "body"})

    assert builtin.path is None
    assert folders.text_column == "body"
    assert (hf_disk.domain_column, hf_disk.text_column) == ("lang", "body")


def test_own_source_on_default_config_is_explained(tmp_path):
    hydra = pytest.importorskip("hydra")

    with hydra.initialize_config_dir(config_dir=str(CONF_DATA), version_base="1.3"):
        default = hydra.compose(config_name="default", overrides=["source=hf_disk", f"path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"data.source=hf_disk is set on the default data config, which keeps the "
                                          r"built-in domain list \(python, cpp,.*Use data=hf_disk data.path=PATH"):
        parse_settings(default)
    # Listing the domains to read is accepted.
    chosen = parse_settings({"source": "hf_disk", "path": str(tmp_path), "domains": ["en", "de"]})
    assert chosen.domains == ("en", "de")


def test_config_files_compose(tmp_path):
    hydra = pytest.importorskip("hydra")
    from omegaconf import OmegaConf

    root = tmp_path / "domains"
    write_domains(root, sample_domains(10))
    with hydra.initialize_config_dir(config_dir=str(CONF_DATA), version_base="1.3"):
        folders = hydra.compose(config_name="folders")
        three = hydra.compose(config_name="three")
        default = hydra.compose(config_name="default")

    assert list(three.domains) == ["python", "wiki", "books"]
    assert len(default.domains) == 8
    folders.path = str(root)
    folders.cache_dir = str(tmp_path / "cache")
    corpus = prepare_corpus(folders)
    assert corpus.domains == ("code", "numbers", "prose")
    assert isinstance(OmegaConf.to_container(default), dict)
    assert parse_settings(default).source == "builtin"


def test_relative_cache_dir_uses_cwd(folder_corpus, tmp_path, monkeypatch):
    _, config = folder_corpus
    monkeypatch.chdir(tmp_path)

    corpus = prepare_corpus({**config, "cache_dir": "relative_cache"})

    assert Path(os.path.commonpath([corpus.path, tmp_path / "relative_cache"])) == tmp_path / "relative_cache"
