"""Corpora for mixbench: the built-in eight-domain corpus or user domains, tokenized into shards.

    from mixbench.data import prepare_corpus, load_corpus
    corpus = prepare_corpus({"domains": ["python", "wiki", "books"], "cache_dir": "/tmp/cache"})
    corpus.tokens("wiki", "train")   # read-only memory-mapped token ids

`prepare_corpus` takes the `data` config group (conf/data/*.yaml) and reuses a finished corpus
directory when the data, split settings and tokenizer are unchanged.
"""

from mixbench.data.config import DEFAULT_DOMAINS
from mixbench.data.corpus import Corpus, load_corpus
from mixbench.data.documents import SPLITS
from mixbench.data.prepare import prepare_corpus
from mixbench.data.tokenizer import DOCUMENT_SEPARATOR

__all__ = [
    "DEFAULT_DOMAINS",
    "DOCUMENT_SEPARATOR",
    "SPLITS",
    "Corpus",
    "load_corpus",
    "prepare_corpus",
]
