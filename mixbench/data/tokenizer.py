"""Tokenizers of a corpus: UTF-8 bytes, a byte-level BPE trained on the corpus, or a local HF one.

Every tokenizer encodes without special tokens. Documents in a token stream are separated by
the encoding of DOCUMENT_SEPARATOR, so the UTF-8 bytes of a split's text are those of its
documents joined by that separator.
"""

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mixbench.data.documents import Document
from mixbench.errors import ConfigError, DataError

DOCUMENT_SEPARATOR = "\n\n"
# Domains of ordinary, uneven sizes cut the BPE sample by a small factor, which matters little. A
# domain that cuts it by this factor or more leaves the tokenizer with much less text than configured.
BPE_SAMPLE_SHORTFALL = 10
# Files that define a Hugging Face tokenizer; weights and model configs are not part of it.
HF_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model",
)  # fmt: skip


def token_dtype(vocab_size: int) -> np.dtype:
    """Return the smallest unsigned integer type that can store every id below `vocab_size`."""
    if vocab_size <= 2**8:
        return np.dtype(np.uint8)
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, one token per byte."""

    kind = "byte"
    id = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_stream(self, texts: Sequence[str]) -> np.ndarray:
        """Return the tokens of the texts joined by DOCUMENT_SEPARATOR."""
        joined = DOCUMENT_SEPARATOR.join(texts).encode("utf-8")
        return np.frombuffer(joined, dtype=np.uint8).copy()

    def decode(self, ids: Sequence[int]) -> str:
        array = np.asarray(ids)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"byte token ids lie in 0..255, got values up to {array.max()}")
        return array.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def save(self, directory: Path) -> str | None:
        """Store what reloading needs under `directory`; return the file name, or None."""
        return None


class BpeTokenizer:
    """A byte-level BPE from the `tokenizers` library, stored as a tokenizer.json file."""

    kind = "bpe"

    def __init__(self, backend, content: str):
        self._backend = backend
        self._content = content
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]
        self.id = f"bpe-{self.vocab_size}-{digest}"

    @classmethod
    def from_file(cls, path: Path) -> "BpeTokenizer":
        from tokenizers import Tokenizer

        content = path.read_text(encoding="utf-8")
        return cls(Tokenizer.from_str(content), content)

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text).ids

    def encode_stream(self, texts: Sequence[str]) -> np.ndarray:
        return _join_encodings([e.ids for e in self._backend.encode_batch(list(texts))], self)

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode([int(i) for i in ids])

    def save_string(self) -> str:
        """Return the tokenizer.json content."""
        return self._content

    def save(self, directory: Path) -> str:
        (directory / "tokenizer.json").write_text(self._content, encoding="utf-8")
        return "tokenizer.json"


def train_bpe(texts_by_domain: dict[str, list[str]], vocab_size: int) -> BpeTokenizer:
    """Train a byte-level BPE on the given texts, domain by domain in the given order.

    Training with `tokenizers` 0.23 on the same texts gave byte-identical tokenizer.json files
    in separate processes; the trained tokenizer's id carries the sha256 of that file.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    texts = [text for domain_texts in texts_by_domain.values() for text in domain_texts]
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return BpeTokenizer(backend, backend.to_str())


def equal_bytes_sample(
    train_documents: dict[str, list[Document]], bytes_per_domain: int
) -> dict[str, list[str]]:
    """Take the same number of UTF-8 bytes from the train documents of every domain.

    The budget is `bytes_per_domain`, or the size of the smallest domain's train split if that
    is smaller. Documents are taken in order and the last one is cut to fit the budget.
    """
    sizes = {
        domain: sum(len(d.text.encode("utf-8")) for d in documents)
        for domain, documents in train_documents.items()
    }
    budget = min([bytes_per_domain, *sizes.values()])
    sample = {}
    for domain, documents in train_documents.items():
        taken_bytes, texts = 0, []
        for document in documents:
            if taken_bytes >= budget:
                break
            data = document.text.encode("utf-8")[: budget - taken_bytes]
            texts.append(data.decode("utf-8", errors="ignore"))
            taken_bytes += len(data)
        sample[domain] = texts
    return sample


def bpe_sample_warning(train_documents: dict[str, list[Document]], bytes_per_domain: int) -> str | None:
    """Return a warning when the smallest domain cuts the BPE sample of every domain to a small share.

    `equal_bytes_sample` takes at most the smallest train split's bytes from each domain. This
    warns when that is less than 1/BPE_SAMPLE_SHORTFALL of what the other domains could give,
    which is `bytes_per_domain` or the largest train split, whichever is smaller.
    """
    sizes = {
        domain: sum(len(d.text.encode("utf-8")) for d in documents)
        for domain, documents in train_documents.items()
    }
    smallest = min(sizes, key=lambda domain: (sizes[domain], domain))
    budget = min(bytes_per_domain, sizes[smallest])
    available_bytes = min(bytes_per_domain, max(sizes.values()))
    if budget * BPE_SAMPLE_SHORTFALL >= available_bytes:
        return None
    return (
        f"the BPE tokenizer trains on {budget} bytes per domain, not "
        f"data.tokenizer.sample_bytes_per_domain={bytes_per_domain}, because every domain gives the "
        f"same number of bytes and the train split of domain {smallest!r} has only "
        f"{sizes[smallest]} bytes. A tokenizer trained on so little text may split words poorly: "
        f"add text to {smallest!r}, or leave it out of data.domains."
    )


class HfTokenizer:
    """A Hugging Face tokenizer loaded from a local directory, never from the hub."""

    kind = "hf"

    def __init__(self, directory: Path, tokenizer_id: str | None = None):
        if not directory.is_dir():
            raise ConfigError(
                f"tokenizer.path {directory} is not a directory: point it to a folder saved "
                "with `save_pretrained` (tokenizer.kind=hf never downloads)."
            )
        from transformers import AutoTokenizer

        if not any((directory / name).is_file() for name in HF_TOKENIZER_FILES):
            raise ConfigError(
                f"tokenizer.path {directory} contains no tokenizer file ({', '.join(HF_TOKENIZER_FILES)}). Point it "
                "to a folder saved with `save_pretrained`."
            )
        try:
            self._backend = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot load a Hugging Face tokenizer from {directory}: {str(error).rstrip('.')}. Point "
                "tokenizer.path to a folder saved with `save_pretrained`."
            ) from error
        self._directory = directory
        self.vocab_size = len(self._backend)
        self.id = tokenizer_id or f"hf-{hf_directory_digest(directory)[:12]}"

    def encode(self, text: str) -> list[int]:
        return self._encode_many([text])[0]

    def encode_stream(self, texts: Sequence[str]) -> np.ndarray:
        return _join_encodings(self._encode_many(list(texts)), self)

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if getattr(self._backend, "is_fast", False):
            # The Rust tokenizer directly: no warnings about sequences longer than the model's.
            encodings = self._backend.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
            return [encoding.ids for encoding in encodings]
        return [self._backend.encode(t, add_special_tokens=False, verbose=False) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode([int(i) for i in ids], clean_up_tokenization_spaces=False)

    def save(self, directory: Path) -> str:
        target = directory / "tokenizer"
        target.mkdir()
        for name in HF_TOKENIZER_FILES:
            if (self._directory / name).is_file():
                shutil.copy2(self._directory / name, target / name)
        return "tokenizer"


def hf_directory_digest(directory: Path) -> str:
    """Return the sha256 over the names and contents of the tokenizer files in `directory`."""
    digest = hashlib.sha256()
    found = False
    for name in HF_TOKENIZER_FILES:
        path = directory / name
        if path.is_file():
            found = True
            digest.update(json.dumps([name, hashlib.sha256(path.read_bytes()).hexdigest()]).encode())
    if not found:
        raise ConfigError(
            f"no tokenizer file found in {directory}: expected one of "
            f"{', '.join(HF_TOKENIZER_FILES)}."
        )
    return digest.hexdigest()


def _join_encodings(encodings: list[list[int]], tokenizer) -> np.ndarray:
    dtype = token_dtype(tokenizer.vocab_size)
    separator = np.asarray(tokenizer.encode(DOCUMENT_SEPARATOR), dtype=dtype)
    arrays = []
    for index, ids in enumerate(encodings):
        if index:
            arrays.append(separator)
        arrays.append(np.asarray(ids, dtype=dtype))
    return np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)


def load_saved_tokenizer(directory: Path, info: dict):
    """Rebuild the tokenizer recorded in a corpus's metadata from the files saved beside it."""
    kind = info["kind"]
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        tokenizer = BpeTokenizer.from_file(directory / info["file"])
    elif kind == "hf":
        tokenizer = HfTokenizer(directory / info["file"], tokenizer_id=info["id"])
    else:
        raise DataError(f"the corpus at {directory} records an unknown tokenizer kind {kind!r}.")
    if tokenizer.id != info["id"] and kind == "bpe":
        raise DataError(
            f"the tokenizer file in {directory} has id {tokenizer.id}, but the corpus was built "
            f"with {info['id']}. Delete {directory} and run `mixbench prepare` again."
        )
    return tokenizer
