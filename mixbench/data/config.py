"""Validation of the `data` config group into typed settings."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixbench.errors import ConfigError, unknown_name_error

DEFAULT_DOMAINS = ("python", "cpp", "docs", "math", "wiki", "books", "legal", "multilingual")
SOURCES = ("builtin", "folders", "hf_disk")
TOKENIZER_KINDS = ("byte", "bpe", "hf")

_DEFAULTS: dict[str, Any] = {
    "name": "default",
    "source": "builtin",
    "domains": None,
    "path": None,
    "domain_column": "domain",
    "text_column": "text",
    "max_bytes_per_domain": 8_000_000,
    "val_fraction": 0.05,
    "test_fraction": 0.05,
    "split_seed": 0,
    "tokenizer": {},
    "cache_dir": ".cache",
}
_TOKENIZER_DEFAULTS: dict[str, Any] = {
    "kind": "byte",
    "vocab_size": 4096,
    "path": None,
    "sample_bytes_per_domain": 1_000_000,
}
# The sources that read each source-specific setting. Any other source would ignore the setting
# without notice (data.path with the builtin source builds the built-in corpus in place of the
# folder), so parse_settings rejects the combination.
SOURCE_SPECIFIC_SETTINGS = {
    "path": ("folders", "hf_disk"),
    "domain_column": ("hf_disk",),
    "text_column": ("folders", "hf_disk"),
}
_SOURCE_INPUTS = {
    "builtin": "the built-in corpus is read from installed packages and pinned archives",
    "folders": "each sub-folder of data.path is one domain",
}
_SOURCE_CONFIGS = {
    "folders": "data=folders (a folder with one sub-folder per domain)",
    "hf_disk": "data=hf_disk (a dataset written by save_to_disk)",
}
# Domain names become shard file names, so they are limited to portable file-name characters.
DOMAIN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")


@dataclass(frozen=True)
class TokenizerSettings:
    """The `tokenizer` sub-config: which tokenizer to use and how to train a BPE one."""

    kind: str
    vocab_size: int
    path: Path | None
    sample_bytes_per_domain: int


@dataclass(frozen=True)
class DataSettings:
    """A validated `data` config. `domains` is None where every domain of the source is used."""

    name: str
    source: str
    domains: tuple[str, ...] | None
    path: Path | None
    domain_column: str
    text_column: str
    max_bytes_per_domain: int | None
    val_fraction: float
    test_fraction: float
    split_seed: int
    tokenizer: TokenizerSettings
    cache_dir: Path


def to_plain_dict(cfg: Any) -> dict[str, Any]:
    """Convert a dict or an OmegaConf DictConfig into a plain, resolved dict."""
    if isinstance(cfg, Mapping) and not _is_omegaconf(cfg):
        return dict(cfg)
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as error:
        raise ConfigError(
            f"a required data setting has no value: {error}. Set it on the command line, "
            "for example `mixbench prepare data=folders data.path=/my/domains`."
        ) from error


def _is_omegaconf(cfg: Any) -> bool:
    return type(cfg).__module__.startswith("omegaconf")


def parse_settings(cfg: Any) -> DataSettings:
    """Validate a `data` config and fill unset keys with the defaults of conf/data/default.yaml."""
    raw = to_plain_dict(cfg)
    for key in raw:
        if key not in _DEFAULTS:
            raise unknown_name_error("data setting", key, _DEFAULTS)
    values = {**_DEFAULTS, **raw}

    source = values["source"]
    if source not in SOURCES:
        raise unknown_name_error("data source", str(source), SOURCES)

    val_fraction = _parse_fraction("val_fraction", values["val_fraction"])
    test_fraction = _parse_fraction("test_fraction", values["test_fraction"])
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction={val_fraction} plus test_fraction={test_fraction} leaves nothing to "
            "train on: keep their sum below 1 (the defaults are 0.05 each)."
        )

    if source != "builtin" and values["name"] == "default" and _listed(values["domains"]) == DEFAULT_DOMAINS:
        # data=default lists the built-in domains, which a folder or dataset of one's own rarely has.
        config = "data=folders" if source == "folders" else "data=hf_disk"
        raise ConfigError(
            f"data.source={source} is set on the default data config, which keeps the built-in domain list "
            f"({', '.join(DEFAULT_DOMAINS)}). Use {config} data.path=PATH, which reads every domain found there, or "
            f"list the domains to read with data.domains=[...]."
        )

    settings = DataSettings(
        name=str(values["name"]),
        source=source,
        domains=_parse_domains(values["domains"], source),
        path=_parse_path(values["path"], source),
        domain_column=str(values["domain_column"]),
        text_column=str(values["text_column"]),
        max_bytes_per_domain=_parse_cap(values["max_bytes_per_domain"]),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=_parse_int("split_seed", values["split_seed"]),
        tokenizer=_parse_tokenizer(values["tokenizer"]),
        cache_dir=_resolve_dir(values["cache_dir"]),
    )
    # Checked after every value is parsed, so that an invalid value is reported first.
    _check_source_specific_settings(values, source)
    return settings


def _check_source_specific_settings(values: dict[str, Any], source: str) -> None:
    """Raise ConfigError if a setting that `source` does not read differs from its default."""
    for key, readers in SOURCE_SPECIFIC_SETTINGS.items():
        value = values[key]
        if source in readers or value is None or str(value) in ("", str(_DEFAULTS[key])):
            continue
        choices = " or ".join(_SOURCE_CONFIGS[reader] for reader in readers)
        raise ConfigError(
            f"data.{key}={value} is set, but data.source={source} ignores it because "
            f"{_SOURCE_INPUTS[source]}. Use {choices}, or remove data.{key}."
        )


def _listed(domains: Any) -> tuple[str, ...] | None:
    """Return a domains setting (a list, or one comma-separated string) as a tuple of names; None stays None."""
    if domains is None:
        return None
    if isinstance(domains, str):
        return tuple(part.strip() for part in domains.split(",") if part.strip())
    return tuple(str(domain) for domain in domains)


def _parse_domains(domains: Any, source: str) -> tuple[str, ...] | None:
    if domains is None:
        return DEFAULT_DOMAINS if source == "builtin" else None
    if isinstance(domains, str):
        domains = [part.strip() for part in domains.split(",") if part.strip()]
    domains = tuple(str(domain) for domain in domains)
    if not domains:
        raise ConfigError("data.domains is empty: list at least one domain, or null for all.")
    duplicates = sorted({domain for domain in domains if domains.count(domain) > 1})
    if duplicates:
        raise ConfigError(f"data.domains lists {duplicates} more than once: list each domain once.")
    for domain in domains:
        if not DOMAIN_NAME_PATTERN.match(domain):
            raise ConfigError(
                f"invalid domain name {domain!r}: use letters, digits, '_', '+' or '-', "
                "starting with a letter or digit."
            )
    if source == "builtin":
        for domain in domains:
            if domain not in DEFAULT_DOMAINS:
                raise unknown_name_error(
                    "domain",
                    domain,
                    DEFAULT_DOMAINS,
                    "For your own text use data.source=folders or data.source=hf_disk.",
                )
    return domains


def _parse_path(path: Any, source: str) -> Path | None:
    if source == "builtin":
        return None
    if path is None or str(path) == "":
        raise ConfigError(
            f"data.path is required for data.source={source}: pass "
            f"data.path=/path/to/{'domain/folders' if source == 'folders' else 'saved/dataset'}."
        )
    return Path(os.path.expanduser(str(path))).resolve()


def _parse_cap(value: Any) -> int | None:
    if value is None:
        return None
    cap = _parse_int("max_bytes_per_domain", value)
    if cap <= 0:
        raise ConfigError(
            f"max_bytes_per_domain={cap} must be positive, or null for no cap."
        )
    return cap


def _parse_fraction(key: str, value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number: use a fraction such as 0.05.") from None
    if not 0 < fraction < 1:
        raise ConfigError(
            f"{key}={fraction} must lie strictly between 0 and 1, because every domain needs "
            "train, val and test documents."
        )
    return fraction


def _parse_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(f"{key}={value!r} must be an integer.")
    return int(value)


def _parse_tokenizer(raw: Any) -> TokenizerSettings:
    raw = {} if raw is None else to_plain_dict(raw)
    for key in raw:
        if key not in _TOKENIZER_DEFAULTS:
            raise unknown_name_error("tokenizer setting", key, _TOKENIZER_DEFAULTS)
    values = {**_TOKENIZER_DEFAULTS, **raw}

    kind = values["kind"]
    if kind not in TOKENIZER_KINDS:
        raise unknown_name_error("tokenizer kind", str(kind), TOKENIZER_KINDS)
    vocab_size = _parse_int("tokenizer.vocab_size", values["vocab_size"])
    if kind == "bpe" and not 256 < vocab_size <= 2**20:
        raise ConfigError(
            f"tokenizer.vocab_size={vocab_size} is out of range for a byte-level BPE: use a "
            "value between 257 and 1048576 (the default is 4096)."
        )
    sample = _parse_int("tokenizer.sample_bytes_per_domain", values["sample_bytes_per_domain"])
    if sample <= 0:
        raise ConfigError(f"tokenizer.sample_bytes_per_domain={sample} must be positive.")

    path = values["path"]
    if kind != "hf" and path is not None and str(path) != "":
        raise ConfigError(
            f"data.tokenizer.path={path} is set, but data.tokenizer.kind={kind} ignores it, so the "
            f"{kind} tokenizer would be used in place of the one saved there. Add "
            "data.tokenizer.kind=hf, or remove data.tokenizer.path."
        )
    if kind == "hf" and (path is None or str(path) == ""):
        raise ConfigError(
            "tokenizer.kind=hf needs tokenizer.path, a local directory saved with "
            "save_pretrained (nothing is downloaded)."
        )
    return TokenizerSettings(
        kind=kind,
        vocab_size=vocab_size,
        path=None if path is None else Path(os.path.expanduser(str(path))).resolve(),
        sample_bytes_per_domain=sample,
    )


def _resolve_dir(value: Any) -> Path:
    """Resolve a relative cache directory against the directory the command was started in."""
    path = Path(os.path.expanduser(str(value)))
    if path.is_absolute():
        return path
    return (_launch_dir() / path).resolve()


def _launch_dir() -> Path:
    # Hydra may change the working directory of a job; its original one is where the user ran.
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:
        pass
    return Path.cwd()
