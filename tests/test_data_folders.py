"""User domains: folder and saved-dataset inputs, and the errors they raise."""

import gzip
import json
import sys
from pathlib import Path

import pytest

from mixbench.data import prepare_corpus
from mixbench.errors import ConfigError, DataError


def write_txt_domain(root, domain, texts):
    folder = root / domain
    folder.mkdir(parents=True, exist_ok=True)
    for index, text in enumerate(texts):
        (folder / f"doc{index:03d}.txt").write_text(text, encoding="utf-8")


def folder_config(root, cache, **overrides):
    config = {"source": "folders", "path": str(root), "cache_dir": str(cache)}
    config.update(overrides)
    return config


def decoded_documents(corpus, domain, split):
    """Return the documents of one split, recovered from its byte-tokenized shard."""
    return corpus.decode(corpus.tokens(domain, split)).split("\n\n")


def test_txt_folders_load_all_subfolders(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "beta", [f"beta document {i}" for i in range(10)])
    write_txt_domain(root, "alpha", [f"alpha document {i}" for i in range(10)])

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    assert corpus.domains == ("alpha", "beta")
    assert corpus.metadata["domains"]["alpha"]["documents"] == 10
    all_docs = sum((decoded_documents(corpus, "alpha", s) for s in ("train", "val", "test")), [])
    assert sorted(all_docs) == sorted(f"alpha document {i}" for i in range(10))


def test_folders_domain_subset_keeps_config_order(tmp_path):
    root = tmp_path / "domains"
    for name in ("a", "b", "c"):
        write_txt_domain(root, name, [f"{name} text {i}" for i in range(5)])

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache", domains=["c", "a"]))

    assert corpus.domains == ("c", "a")


def test_jsonl_and_gzip_jsonl_load(tmp_path):
    root = tmp_path / "domains"
    folder = root / "records"
    folder.mkdir(parents=True)
    lines = [json.dumps({"text": f"plain line {i}", "meta": i}) for i in range(6)]
    (folder / "part1.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    gz_lines = [json.dumps({"text": f"gzip line {i}"}) for i in range(6)]
    with gzip.open(folder / "part2.jsonl.gz", "wt", encoding="utf-8") as file:
        file.write("\n".join(gz_lines))

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    assert corpus.metadata["domains"]["records"]["documents"] == 12
    texts = sum((decoded_documents(corpus, "records", s) for s in ("train", "val", "test")), [])
    assert "plain line 3" in texts
    assert "gzip line 5" in texts


def test_parquet_loads(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "domains"
    (root / "tables").mkdir(parents=True)
    table = pyarrow.table({"text": [f"row number {i}" for i in range(8)], "id": list(range(8))})
    parquet.write_table(table, root / "tables" / "data.parquet")

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    assert corpus.metadata["domains"]["tables"]["documents"] == 8
    texts = sum((decoded_documents(corpus, "tables", s) for s in ("train", "val", "test")), [])
    assert sorted(texts) == sorted(f"row number {i}" for i in range(8))


def test_parquet_without_text_column_raises(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "domains"
    (root / "tables").mkdir(parents=True)
    parquet.write_table(pyarrow.table({"body": ["x"] * 5}), root / "tables" / "data.parquet")

    with pytest.raises(DataError, match="no column 'text'.*body"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_hf_disk_dataset_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {
        "domain": ["news"] * 6 + ["code"] * 6,
        "text": [f"news story {i}" for i in range(6)] + [f"x = {i}" for i in range(6)],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    corpus = prepare_corpus(config)

    assert corpus.domains == ("code", "news")
    assert corpus.metadata["domains"]["news"]["documents"] == 6
    texts = sum((decoded_documents(corpus, "code", s) for s in ("train", "val", "test")), [])
    assert sorted(texts) == sorted(f"x = {i}" for i in range(6))


def test_hf_disk_unknown_domain_lists_values(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"domain": ["news"] * 5, "text": [f"story {i}" for i in range(5)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "domains": ["newz"],
              "cache_dir": str(tmp_path / "c")}  # fmt: skip
    with pytest.raises(DataError, match="Did you mean 'news'"):
        prepare_corpus(config)


def test_hf_disk_null_domain_raises(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {
        "domain": ["news"] * 6 + [None, "code", None] + ["code"] * 5,
        "text": [f"document {i}" for i in range(14)],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(DataError) as raised:
        prepare_corpus(config)

    message = str(raised.value)
    assert "2 row(s) of" in message
    assert "column 'domain' is null in rows 6, 8" in message
    assert "Give every row a domain" in message


def class_label_dataset(datasets, labels):
    features = datasets.Features(
        {"domain": datasets.ClassLabel(names=["news", "code", "law"]), "text": datasets.Value("string")}
    )
    rows = {"domain": labels, "text": [f"document {i}" for i in range(len(labels))]}
    return datasets.Dataset.from_dict(rows, features=features)


def test_hf_disk_class_label_names_domains(tmp_path):
    datasets = pytest.importorskip("datasets")
    class_label_dataset(datasets, [2] * 4 + [0] * 5 + [1] * 6).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    corpus = prepare_corpus(config)

    assert corpus.domains == ("code", "law", "news")
    assert corpus.metadata["domains"]["code"]["documents"] == 6
    assert corpus.metadata["domains"]["law"]["documents"] == 4
    texts = sum((decoded_documents(corpus, "law", s) for s in ("train", "val", "test")), [])
    assert sorted(texts) == [f"document {i}" for i in range(4)]


def test_hf_disk_missing_class_label_raises(tmp_path):
    datasets = pytest.importorskip("datasets")
    class_label_dataset(datasets, [0] * 5 + [1] * 5 + [-1]).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(DataError, match=r"1 row\(s\) .* is null or -1 \(no class label\) in rows 10\."):
        prepare_corpus(config)


def test_hf_disk_dataset_dict_pools_splits(tmp_path, caplog):
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict({"domain": ["news"] * 8, "text": [f"train story {i}" for i in range(8)]})
    validation = datasets.Dataset.from_dict({"domain": ["news"] * 3, "text": [f"held story {i}" for i in range(3)]})
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(tmp_path / "saved"))

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    with caplog.at_level("INFO", logger="mixbench.data"):
        corpus = prepare_corpus(config)

    assert corpus.metadata["domains"]["news"]["documents"] == 11
    pooled = [record.getMessage() for record in caplog.records if "has the splits" in record.getMessage()]
    assert len(pooled) == 1
    assert "has the splits train, validation; mixbench reads the rows of all of them" in pooled[0]
    assert "splits each domain into train/val/test by document itself" in pooled[0]


def test_hf_disk_not_a_dataset_raises(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a dataset")

    config = {"source": "hf_disk", "path": str(tmp_path / "plain"), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(DataError) as raised:
        prepare_corpus(config)

    message = str(raised.value)
    assert f"cannot load a dataset from data.path {tmp_path / 'plain'}" in message
    assert ".." not in message
    assert "Point it to a directory written by `Dataset.save_to_disk`" in message


def test_missing_domain_folder_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "python", ["a", "b", "c"])

    with pytest.raises(DataError, match="'pythn'.*Did you mean 'python'"):
        prepare_corpus(folder_config(root, tmp_path / "cache", domains=["pythn"]))
    # A data.path one level too high: every listed domain is missing, and all are named at once.
    with pytest.raises(DataError, match=r"data.path .* has no folder for domain\(s\) 'arxiv', 'book', which data.domains "
                                        r"lists. Its folders are domains: point data.path"):
        prepare_corpus(folder_config(tmp_path, tmp_path / "cache", domains=["arxiv", "book"]))


def test_missing_path_raises(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        prepare_corpus(folder_config(tmp_path / "nowhere", tmp_path / "cache"))


def test_folders_without_path_raises(tmp_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        prepare_corpus({"source": "folders", "cache_dir": str(tmp_path)})


def test_empty_domain_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "full", ["one", "two", "three"])
    write_txt_domain(root, "empty", ["", "   \n", ""])

    with pytest.raises(DataError, match="'empty'.*holds no text"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_domain_folder_without_files_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "full", ["one", "two", "three"])
    (root / "hollow").mkdir()

    with pytest.raises(DataError, match="'hollow'.*found 0 document"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_unsupported_extension_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "mixed", ["one", "two", "three"])
    (root / "mixed" / "table.csv").write_text("a,b\n1,2\n")

    with pytest.raises(DataError, match="unsupported file .*table.csv"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_hidden_files_are_skipped(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "notes", ["one", "two", "three"])
    (root / "notes" / ".DS_Store").write_bytes(b"\x00\x01")

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    assert corpus.metadata["domains"]["notes"]["documents"] == 3


def test_jsonl_line_without_text_raises(tmp_path):
    root = tmp_path / "domains"
    (root / "records").mkdir(parents=True)
    (root / "records" / "a.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')

    with pytest.raises(DataError, match=r"a.jsonl, line 2: .*'text' field, found \['body'\]"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_jsonl_invalid_json_raises(tmp_path):
    root = tmp_path / "domains"
    (root / "records").mkdir(parents=True)
    (root / "records" / "a.jsonl").write_text('{"text": "fine"}\n{"text": \n')

    with pytest.raises(DataError, match="a.jsonl, line 2: invalid JSON"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def gzip_jsonl_bytes(count):
    lines = [json.dumps({"text": f"record {i} " * 40}) for i in range(count)]
    return gzip.compress("\n".join(lines).encode("utf-8"))


@pytest.mark.parametrize(
    "damage, error_text",
    [
        (lambda data: data[:300], "EOFError"),
        (lambda data: b'{"text": "plain"}\n', "BadGzipFile"),
        (lambda data: data[:10] + b"\xff" * 200 + data[210:], "error: Error -3"),
    ],
    ids=["truncated", "not-compressed", "corrupt-block"],
)
def test_damaged_gzip_jsonl_names_file(tmp_path, damage, error_text):
    root = tmp_path / "domains"
    write_txt_domain(root, "prose", ["one", "two", "three"])
    (root / "records").mkdir()
    (root / "records" / "good.jsonl.gz").write_bytes(gzip_jsonl_bytes(20))
    (root / "records" / "broken.jsonl.gz").write_bytes(damage(gzip_jsonl_bytes(200)))

    with pytest.raises(DataError) as raised:
        prepare_corpus(folder_config(root, tmp_path / "cache"))

    message = str(raised.value)
    assert "broken.jsonl.gz is not a valid gzip file" in message
    assert error_text in message
    assert "gzip -t" in message


def test_truncated_parquet_names_file(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "domains"
    (root / "tables").mkdir(parents=True)
    table = pyarrow.table({"text": [f"row number {i} " * 30 for i in range(50)]})
    parquet.write_table(table, root / "tables" / "whole.parquet")
    whole = (root / "tables" / "whole.parquet").read_bytes()
    (root / "tables" / "cut.parquet").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(DataError, match=r"cut.parquet is not a readable Parquet file .*Write"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_damaged_parquet_names_file(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "domains"
    (root / "tables").mkdir(parents=True)
    table = pyarrow.table({"text": [f"row number {i} " * 30 for i in range(200)]})
    parquet.write_table(table, root / "tables" / "data.parquet", compression="snappy")
    # Overwrite bytes inside the compressed column data: pyarrow then raises a plain OSError.
    data = bytearray((root / "tables" / "data.parquet").read_bytes())
    data[len(data) // 5: len(data) // 5 + 200] = bytes(range(200))
    (root / "tables" / "data.parquet").write_bytes(bytes(data))

    with pytest.raises(DataError, match=r"data.parquet is not a readable Parquet file .*damaged"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_hf_disk_cut_short_arrow_file_raises(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"domain": ["news"] * 300 + ["code"] * 300,
            "text": [f"news story {i} " * 20 for i in range(300)] + [f"x = {i} " * 20 for i in range(300)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])

    config = {"source": "hf_disk", "path": str(tmp_path / "saved"), "cache_dir": str(tmp_path / "c")}
    with pytest.raises(DataError, match=r"cannot be read .*cut short or damaged. Save the dataset again"):
        prepare_corpus(config)


def test_file_name_not_utf8_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "prose", ["one", "two", "three"])
    # Linux file names are bytes; this one is Latin-1 "café.txt".
    with open(bytes(root / "prose") + b"/caf\xe9.txt", "wb") as file:
        file.write(b"text")

    with pytest.raises(DataError, match=r"file name .*caf.* is not valid UTF-8.*Rename the file"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_byte_order_marks_are_dropped(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "prose", ["one", "two"])
    (root / "prose" / "marked.txt").write_bytes("\ufeffmarked text".encode("utf-8"))
    (root / "records").mkdir()
    lines = ['{"text": "first record"}', '{"text": "second record"}', '{"text": "third record"}']
    (root / "records" / "a.jsonl").write_bytes("\ufeff".encode("utf-8") + "\n".join(lines).encode("utf-8"))

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    prose = sum((decoded_documents(corpus, "prose", s) for s in ("train", "val", "test")), [])
    records = sum((decoded_documents(corpus, "records", s) for s in ("train", "val", "test")), [])
    assert sorted(prose) == ["marked text", "one", "two"]
    assert sorted(records) == ["first record", "second record", "third record"]


def test_binary_txt_file_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "prose", ["one", "two", "three"])
    # A real executable: the Python interpreter running this test.
    (root / "prose" / "program.txt").write_bytes(Path(sys.executable).resolve().read_bytes())

    with pytest.raises(DataError) as raised:
        prepare_corpus(folder_config(root, tmp_path / "cache"))

    message = str(raised.value)
    assert "program.txt is a binary file" in message
    assert "NUL byte at offset" in message
    assert "Remove it" in message


def test_latin1_txt_file_raises(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "prose", ["one", "two", "three"])
    (root / "prose" / "old.txt").write_bytes("first line\nCaf\u00e9 au lait".encode("latin-1"))

    with pytest.raises(DataError) as raised:
        prepare_corpus(folder_config(root, tmp_path / "cache"))

    message = str(raised.value)
    assert "old.txt contains invalid UTF-8" in message
    assert "byte 0xe9 at offset 14 (line 2)" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_latin1_jsonl_line_raises(tmp_path):
    root = tmp_path / "domains"
    (root / "records").mkdir(parents=True)
    lines = ['{"text": "fine"}', '{"text": "na\u00efve"}']
    (root / "records" / "a.jsonl").write_bytes("\n".join(lines).encode("latin-1"))

    with pytest.raises(DataError, match=r"a.jsonl, line 2: invalid UTF-8 \(byte 0xef"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_utf8_txt_keeps_non_ascii_text(tmp_path):
    root = tmp_path / "domains"
    texts = ["Caf\u00e9 na\u00efve", "\u65e5\u672c\u8a9e", "\u0440\u0443\u0441\u0441\u043a\u0438\u0439"]
    write_txt_domain(root, "prose", texts)

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    decoded = sum((decoded_documents(corpus, "prose", s) for s in ("train", "val", "test")), [])
    assert sorted(decoded) == sorted(texts)


def test_custom_text_column_for_jsonl(tmp_path):
    root = tmp_path / "domains"
    (root / "records").mkdir(parents=True)
    lines = [json.dumps({"content": f"body {i}"}) for i in range(5)]
    (root / "records" / "a.jsonl").write_text("\n".join(lines))

    corpus = prepare_corpus(folder_config(root, tmp_path / "cache", text_column="content"))

    assert corpus.metadata["domains"]["records"]["documents"] == 5


def test_too_few_documents_names_domain(tmp_path):
    root = tmp_path / "domains"
    write_txt_domain(root, "big", [f"text {i}" for i in range(10)])
    write_txt_domain(root, "tiny", ["only one", "and two"])

    with pytest.raises(DataError, match="'tiny' has 2 document"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))


def test_byte_cap_takes_whole_documents(tmp_path, caplog):
    root = tmp_path / "domains"
    write_txt_domain(root, "capped", ["x" * 100 for _ in range(20)])
    write_txt_domain(root, "whole", ["y" * 100 for _ in range(5)])

    with caplog.at_level("WARNING", logger="mixbench.data"):
        corpus = prepare_corpus(folder_config(root, tmp_path / "cache", max_bytes_per_domain=1050))

    info = corpus.metadata["domains"]["capped"]
    assert info["documents"] == 10
    assert info["bytes"] == 1000
    # The dropped documents are reported with the setting that keeps them; a domain under the cap is not.
    capped = [r.getMessage() for r in caplog.records if "max_bytes_per_domain=1050 keeps" in r.getMessage()]
    assert len(capped) == 1
    assert "domain capped" in capped[0]
    assert "10 of its 20 documents" in capped[0]
    assert "max_bytes_per_domain=null" in capped[0]


def test_prepare_warns_about_skewed_splits(tmp_path, caplog):
    root = tmp_path / "domains"
    write_txt_domain(root, "pycode", ["a" * 23_000, "b" * 15_000, "c" * 4_500, "d" * 300])
    write_txt_domain(root, "prose", [f"sentence number {i} of the prose. " * 20 for i in range(40)])

    with caplog.at_level("WARNING", logger="mixbench.data"):
        prepare_corpus(folder_config(root, tmp_path / "cache"))

    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "domain 'pycode'" in warnings[0]
    assert "configured 0.900/0.050/0.050" in warnings[0]


def test_reused_corpus_logs_skew_summary(tmp_path, caplog):
    root = tmp_path / "domains"
    write_txt_domain(root, "pycode", ["a" * 23_000, "b" * 15_000, "c" * 4_500, "d" * 300])
    write_txt_domain(root, "prose", [f"sentence number {i} of the prose. " * 20 for i in range(40)])
    prepare_corpus(folder_config(root, tmp_path / "cache"))
    caplog.clear()

    with caplog.at_level("INFO", logger="mixbench.data"):
        corpus = prepare_corpus(folder_config(root, tmp_path / "cache"))

    assert corpus.reused
    skew = [record for record in caplog.records if "far from the configured" in record.getMessage()]
    assert len(skew) == 1
    assert skew[0].levelname == "INFO"
    assert "domain 'pycode'" in skew[0].getMessage()
    assert "(warned in full when this corpus was prepared)" in skew[0].getMessage()
    assert "largest document" not in skew[0].getMessage()
