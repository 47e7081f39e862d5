"""The Aioli paper's setting (experiment=aioli_paper): its values, its model, and a short real run.

The full setting needs GPUs and SlimPajama. The run here shrinks the model and the step count, and
it reads seven small domains of real text written as .jsonl files: docstrings, licences, package
descriptions and source files of installed packages. It goes through `mixbench run` as a user
starts it.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from methods.aioli import PUBLISHED
from mixbench.commands import method_config
from mixbench.data.config import parse_settings
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, build_method
from mixbench.setting import check_settings
from mixbench.train.model import build_model, count_parameters

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DOMAINS = ["arxiv", "book", "c4", "commoncrawl", "github", "stackexchange", "wikipedia"]
SITE = Path(np.__file__).resolve().parents[1]


def compose_config(command: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=command, overrides=list(overrides))


def docstrings(package: str, limit: int) -> list[str]:
    """Collect docstrings of at least 200 characters from a package's source, without importing it."""
    found = []
    for path in sorted((SITE / package).rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="ignore"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                text = ast.get_docstring(node)
                if text and len(text) >= 200:
                    found.append(text)
        if len(found) >= limit:
            return found[:limit]
    return found


def file_texts(paths, limit: int, start: str | None = None) -> list[str]:
    texts = []
    for path in paths:
        text = path.read_text(encoding="utf-8", errors="ignore")
        if start is not None:
            # A METADATA file is mail headers, a blank line, then the package description.
            text = text.partition(start)[2]
        if len(text) >= 200:
            texts.append(text)
        if len(texts) == limit:
            break
    return texts


def licence_files() -> list[Path]:
    """Return the licence texts of the installed wheels: in dist-info itself, or in its licenses/ folder (newer wheels)."""
    found = {*SITE.glob("*.dist-info/LICENSE*"), *SITE.glob("*.dist-info/licenses/**/*")}
    return sorted(path for path in found if path.is_file())


def write_domains(root: Path, documents: int = 12, max_chars: int = 3000) -> Path:
    """Write one .jsonl file of real text per domain, `documents` documents each."""
    sources = {
        "arxiv": docstrings("sympy", documents),
        "book": file_texts(licence_files(), documents),
        "c4": file_texts(sorted(SITE.glob("*.dist-info/METADATA")), documents, start="\n\n"),
        "commoncrawl": docstrings("transformers/generation", documents),
        "github": file_texts(sorted((SITE / "torch" / "nn" / "modules").glob("*.py")), documents),
        "stackexchange": docstrings("numpy/lib", documents),
        "wikipedia": docstrings("mpmath", documents),
    }
    for domain, texts in sources.items():
        assert len(texts) == documents, f"found {len(texts)} {domain} documents in installed packages, need {documents}"
        folder = root / domain
        folder.mkdir(parents=True)
        lines = [json.dumps({"text": text[:max_chars]}) for text in texts]
        (folder / "part-000.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_benchmark_config_has_paper_values():
    cfg = compose_config("benchmark", "experiment=aioli_paper")
    train, model, data = cfg.train, cfg.model, cfg.data

    assert (train.steps, train.batch_size, model.context) == (40000, 8, 2048)
    assert (train.lr, train.warmup_steps, train.weight_decay, train.grad_clip) == (5e-4, 500, 0.01, 1.0)
    assert (model.family, model.d_model, model.n_layer, model.n_head, model.d_ff) == ("neox", 768, 12, 12, 3072)
    assert list(data.domains) == DOMAINS
    assert (data.source, data.path) == ("folders", None)
    assert (data.tokenizer.kind, data.tokenizer.path) == ("hf", None)
    assert cfg.experiment.name == "aioli_paper"
    assert list(cfg.experiment.seeds) == [0, 1, 2]
    check_settings(OmegaConf.to_container(model), OmegaConf.to_container(train))


def test_method_settings_are_published_ones():
    cfg = compose_config("benchmark", "experiment=aioli_paper")
    overrides = OmegaConf.to_container(cfg.experiment.method_overrides)
    assert overrides["aioli"] == PUBLISHED[7]
    assert overrides["skill_it"] == {"eta": 0.2, "update_steps": 400, "window": 3}
    assert overrides["doremi"]["eta"] == 0.01
    assert overrides["doge"] == {"mu": 0.1, "lr": cfg.train.lr}

    context = MethodContext(domains=tuple(DOMAINS), eval_sets=tuple(DOMAINS), train_tokens=np.full(7, 2.5e8),
                            total_steps=int(cfg.train.steps), tokens_per_step=8 * 2048, seed=0)
    for name in cfg.experiment.methods:
        method = build_method(method_config(name, overrides.get(name)))
        method.check(context)
    # Sweep probes train the main model for the whole run, as the published sweeps do.
    probes = build_method(method_config("dml", overrides["dml"])).explore(context)
    assert len(probes) == 14
    assert all(probe.steps is None and not probe.model for probe in probes)


def test_run_composes_same_setting():
    run = compose_config("run", "experiment=aioli_paper", "method=aioli")
    benchmark = compose_config("benchmark", "experiment=aioli_paper")
    assert run.experiment.name == "aioli_paper"
    for group in ("data", "model", "train"):
        assert run[group] == benchmark[group], f"{group} differs between run and benchmark"


def test_pythia160m_has_published_parameter_count():
    cfg = compose_config("run", "model=pythia160m")
    # The meta device builds the full model without allocating its 650 MB of weights.
    with torch.device("meta"):
        model = build_model(OmegaConf.to_container(cfg.model), vocab_size=50304, seed=0)
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert model.config.use_parallel_residual and not model.config.tie_word_embeddings
    # Pythia-160M's published sizes with its padded 50,304-token vocabulary.
    assert count_parameters(model) == {"total": 162_322_944, "non_embedding": 85_056_000}


def test_missing_data_and_tokenizer_paths_rejected(tmp_path):
    cfg = compose_config("run", "experiment=aioli_paper")
    with pytest.raises(ConfigError, match="data.path is required"):
        parse_settings(cfg.data)
    cfg = compose_config("run", "experiment=aioli_paper", f"data.path={tmp_path}")
    with pytest.raises(ConfigError, match="tokenizer.kind=hf needs tokenizer.path"):
        parse_settings(cfg.data)


def test_paper_run_trains_on_local_files(tmp_path):
    domains = write_domains(tmp_path / "slimpajama")
    overrides = [
        "experiment=aioli_paper", "method=aioli", f"data.path={domains}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.tokenizer.kind=byte", "data.val_fraction=0.15", "data.test_fraction=0.15",
        "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.d_ff=64", "model.context=32",
        "train.steps=16", "train.warmup_steps=2", "train.eval_every=8", "train.checkpoint_every=8",
        "train.eval_tokens=256", "train.test_tokens=256", "train.bf16=false", "train.threads=1",
        "method.update_steps=8", "method.lp_rounds=1", "method.lp_steps=1",
    ]
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-m", "mixbench", "run", *overrides], cwd=tmp_path,
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built neox model" in result.stderr

    summary = json.loads((tmp_path / "results" / "aioli_paper" / "methods" / "aioli-seed0.json").read_text())
    record = json.loads((tmp_path / "results" / "runs" / summary["final_run"] / "record.json").read_text())
    assert record["status"] == "complete"
    assert record["domains"] == DOMAINS
    # Learning rate, batch size and weight decay come from aioli_paper; the step count is overridden.
    train = record["spec"]["train"]
    assert (train["lr"], train["batch_size"], train["weight_decay"], train["steps"]) == (5e-4, 8, 0.01, 16)
    assert record["spec"]["model"]["family"] == "neox"
    # Aioli ran two rounds of 7 one-step exploration sub-rounds and re-estimated A each time.
    assert [entry["step"] for entry in record["rounds"]] == [7, 15]
    assert all(np.isfinite(record["test_perplexity"]))
