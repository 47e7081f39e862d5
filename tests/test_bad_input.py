"""Invalid input through the command line: a clear message, a non-zero exit, and no earlier result changed."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED, TINY_MODEL, TINY_TRAIN

REGMIX = SHARED / "reference_runs" / "regmix"


def _data(folders: Path, cache: Path) -> list[str]:
    return ["data=folders", f"data.path={folders}", f"data.cache_dir={cache}", "data.val_fraction=0.15", "data.test_fraction=0.15"]


def _common(folders: Path, cache: Path) -> list[str]:
    items = _data(folders, cache)
    items += [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    items += [f"train.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    return items


def _mixbench(args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)


def _digest(folder: Path) -> str:
    """Hash every file under `folder`, so that any change to an earlier result shows."""
    hasher = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hasher.update(str(path.relative_to(folder)).encode())
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


@pytest.fixture(scope="module")
def workspace(text_folders, tmp_path_factory):
    """A folder with a finished benchmark whose results every bad command must leave untouched."""
    root = tmp_path_factory.mktemp("bad-input")
    bad = root / "bad_domains"
    (bad / "empty").mkdir(parents=True)
    (bad / "words").mkdir()
    for index in range(3):
        (bad / "words" / f"{index}.txt").write_text("tiny text " * 40)
    (root / "odd_domains" / "docs").mkdir(parents=True)
    (root / "odd_domains" / "docs" / "report.docx").write_bytes(b"not text")
    (root / "jsonl_domains" / "notes").mkdir(parents=True)
    (root / "jsonl_domains" / "notes" / "a.jsonl").write_text(json.dumps({"body": "no text field"}) + "\n")
    (root / "tiny_domains").mkdir()
    for domain, size in (("big", 20_000), ("small", 30)):
        (root / "tiny_domains" / domain).mkdir()
        for index in range(3):
            (root / "tiny_domains" / domain / f"{index}.txt").write_text("abcdefghij" * (size // 10))
    (root / "mixtures.csv").write_text("index,a,b\n1,0.5,0.5\n2,0.2,0.8\n3,1.0,0.0\n")
    (root / "losses.csv").write_text("index,loss_a\n1,3.0\n2,3.1\n4,2.9\n")

    common = _common(text_folders, root / "cache")
    result = _mixbench(["benchmark", *common, "experiment.methods=[stratified]"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, common, _data(text_folders, root / "cache")


CASES = {
    "mixture-sum": (["run", "method=fixed", "method.mixture=[0.5,0.5,0.5]"], "=0.5) sums to 1.5, not 1"),
    "mixture-sum-fix": (["run", "method=fixed", "method.mixture=[0.5,0.5,0.5]"], "set fixed's normalize to true (with mixbench run as method.mixture=[...] (and method.normalize=true"),
    "mixture-missing": (["run", "method=fixed"], "in a benchmark as '+experiment.method_overrides.fixed={mixture: [...]}' (and normalize: true)"),
    "mixture-length": (["run", "method=fixed", "method.mixture=[0.5,0.5]"], "has 2 weights but there are 3 domains"),
    "mixture-negative": (["run", "method=fixed", "method.mixture=[1.5,-0.5,0]"], "negative weights"),
    "mixture-nan": (["run", "method=fixed", "method.mixture=[nan,0.5,0.5]"], "NaN"),
    "mixture-unknown-domain": (["run", "method=fixed", "+method.mixture.poetry=1.0"], "unknown domain(s) 'poetry'"),
    "mixture-mapping-not-number": (["run", "method=fixed", "method.mixture={legal: abc, python: 1.0}"],
                                   "fixed's mixture gives domain 'legal' the weight 'abc', which is not a number"),
    "doremi-reference-mapping-typo": (["run", "method=doremi", "method.reference_mixture={legal: 0.5, pyton: 0.5}"],
                                      "unknown domain(s) 'pyton' (did you mean 'python'?)"),
    "method-unknown": (["run", "method=stratifed"], "method=stratifed has no config file method/stratifed.yaml. Did you mean method=stratified?"),
    "method-setting-unknown": (["run", "+method.eta=1.0"], "does not take the setting(s) eta"),
    "train-key-unknown": (["run", "+train.step=40"], "+train.step adds a new setting that mixbench never reads; did you mean train.steps?"),
    "train-key-new": (["run", "+train.momentum=0.9"], "unknown train setting 'momentum'"),
    "model-key-unknown": (["run", "+model.n_layers=2"], "+model.n_layers adds a new setting that mixbench never reads; did you mean model.n_layer?"),
    "tracker-unknown": (["run", "train.trackers=[tensorbord]"], "'tensorbord', which is not a supported tracker"),
    "model-family": (["run", "model.family=gpt3"], "unknown model family 'gpt3'"),
    "model-heads": (["run", "model.n_head=3"], "not divisible by model.n_head=3"),
    "warmup": (["run", "train.warmup_steps=50"], "train.warmup_steps=50 is not below train.steps=12"),
    "accumulation": (["run", "train.batch_size=6", "train.grad_accumulation=4"], "not divisible by train.grad_accumulation=4"),
    "learning-rate": (["run", "train.lr=-1"], "train.lr=-1"),
    "sampling": (["run", "train.sampling=uniform"], "train.sampling='uniform' is unknown"),
    "results-dir": (["run", "results_dir=/proc/mixbench-results"], "results_dir"),
    "aioli-budget": (["run", "method=aioli", "method.update_steps=4", "method.lp_rounds=2", "method.lp_steps=4"], "more than the round of update_steps=4"),
    "skills-graph": (["run", "method=skill_it", "method.graph=[[1,0],[0,1]]"], "graph"),
    "skills-graph-ragged": (["run", "method=skill_it", "method.graph=[[1,0,0],[0,1],[0,0,1]]"], "rows of different lengths"),
    "method-value-type": (["run", "method=doremi", "method.eta=abc"], "got eta='abc'; expected a number (default 1.0)"),
    "method-value-inf": (["run", "method=doremi", "method.eta=inf"], "got eta=inf; give a finite value"),
    "method-value-nan-string-default": (["run", "method=doremi", "method.normalization=nan"], "got normalization=nan; give a finite value"),
    "setting-kind": (["run", "experiment=sim", "experiment.name=default"], "contains results of experiment.setting=corpus"),
    "plugin": (["run", "plugins=[no_such_module]"], "plugin module 'no_such_module' could not be imported"),
    "builtin-domain": (["prepare", "data=default", "data.domains=[python,wikipedia]"], "wikipedia"),
    "tokenizer-kind": (["prepare", "data.tokenizer.kind=wordpiece"], "wordpiece"),
    "tokenizer-folder": (["prepare", "data.tokenizer.kind=hf", "data.tokenizer.path=/no/such/tokenizer"], "/no/such/tokenizer"),
    "data-folder": (["prepare", "data.path=/no/such/folder"], "/no/such/folder"),
    "data-path-builtin": (["prepare", "data=default"], "is set, but data.source=builtin ignores it because the built-in corpus"),
    "empty-domain": (["prepare", "data.path={root}/bad_domains"], "empty"),
    "file-type": (["prepare", "data.path={root}/odd_domains"], "report.docx"),
    "jsonl-field": (["prepare", "data.path={root}/jsonl_domains"], "text"),
    "tiny-domain": (["run", "data.path={root}/tiny_domains"], "small"),
    "table-unknown": (["table", "experiment.name=missing"], "no method results"),
    "laws-rows": (["laws", "train.mixtures={root}/mixtures.csv", "train.losses={root}/losses.csv"], "index 3 is in mixtures.csv but missing from losses.csv"),
    "benchmark-exclude-typo": (["benchmark", "experiment.methods=[stratified,natural]", "experiment.exclude=[natral]"],
                               "unknown method 'natral'. Did you mean 'natural'"),
    "benchmark-override-typo": (["benchmark", "experiment.methods=[stratified]", "+experiment.method_overrides.doremmi={eta: 0.5}"],
                                "Fix the name in experiment.method_overrides"),
    "benchmark-method-key": (["benchmark", "experiment.methods=[aioli]", "experiment.method_overrides.aioli.update_steps=50"],
                             "Set experiment.method_overrides.aioli.update_steps below train.steps"),
    "benchmark-seeds-twice": (["benchmark", "experiment.methods=[stratified]", "experiment.seeds=[0,0]"], "lists 0 more than once"),
    "benchmark-seed-negative": (["benchmark", "experiment.methods=[stratified]", "experiment.seeds=[-1]"],
                                "experiment.seeds=[-1] lists -1; seeds are whole numbers >= 0."),
    "benchmark-seed-fraction": (["benchmark", "experiment.methods=[stratified]", "experiment.seeds=[0.5]"],
                                "experiment.seeds=[0.5] lists 0.5; seeds are whole numbers >= 0."),
    "benchmark-seeds-not-list": (["benchmark", "experiment.methods=[stratified]", "experiment.seeds=0"],
                                 "experiment.seeds=0 is invalid; give a list of whole numbers >= 0, like [0,1,2]."),
    "benchmark-exclude-not-list": (["benchmark", "experiment.exclude=natural"],
                                   "experiment.exclude='natural' is invalid; give a list of method names, like [natural]."),
    "run-seed-negative": (["run", "method=natural", "seed=-3"], "seed=-3 is invalid; a seed is a whole number >= 0."),
    "benchmark-methods-twice": (["benchmark", "experiment.methods=[stratified,stratified]"], "lists stratified more than once"),
    "laws-list-in-sweep": (["laws", "experiment=laws_static_sim", "laws=[linear]"], "not in a law sweep; set experiment.laws=[linear] instead"),
    "laws-list-in-dynamic-sweep": (["laws", "experiment=laws_dynamic_sim", "laws=[linear]"], "fits only the dynamic law dL = -A p and takes no law list"),
    "laws-experiment-typo": (["laws", "experiment=laws_statik_sim"], "Did you mean experiment=laws_static_sim"),
    "laws-file": (["laws", "train.mixtures={root}/absent.csv", "train.losses={root}/losses.csv"], "absent.csv"),
}


@pytest.mark.parametrize(
    "message, renamed",
    [
        ("Set method.update_steps below train.steps.", "Set experiment.method_overrides.aioli.update_steps below train.steps."),
        ("method aioli: method.design=grid; use method.design=cover.",
         "method aioli: experiment.method_overrides.aioli.design=grid; use experiment.method_overrides.aioli.design=cover."),
        ("settings: +method.KEY=VALUE or submethod.x", "settings: +method.KEY=VALUE or submethod.x"),
        ("in a benchmark as '+experiment.method_overrides.aioli={...}', with mixbench run as method.eta",
         "in a benchmark as '+experiment.method_overrides.aioli={...}', with mixbench run as method.eta"),
    ],
    ids=["sentence", "twice", "other-prefixes", "names-both"],
)
def test_benchmark_method_error_names_benchmark_key(message, renamed):
    from mixbench.commands import benchmark_method_error
    from mixbench.errors import ConfigError, MixtureError

    assert str(benchmark_method_error(ConfigError(message), "aioli")) == renamed
    assert isinstance(benchmark_method_error(MixtureError(message), "aioli"), MixtureError)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_rejected(workspace, case):
    root, common, data = workspace
    arguments, message = CASES[case]
    command, *overrides = [argument.replace("{root}", str(root)) for argument in arguments]
    if command in ("run", "benchmark"):
        overrides = [*common, *overrides]
    if command == "prepare":
        overrides = [*data, *overrides]
    before = _digest(root / "results")

    result = _mixbench([command, *overrides], root)

    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "val loss" not in result.stderr, "training started before the input was checked"
    assert _digest(root / "results") == before


def test_prepare_warns_about_splits_shorter_than_a_window(workspace):
    root, _, data = workspace
    result = _mixbench(["prepare", *data, f"data.path={root}/tiny_domains"], root)
    # The corpus itself is valid; runs with the default context of 128 would reject it.
    assert result.returncode == 0, result.stderr[-2000:]
    warning = [line for line in result.stderr.splitlines() if "fewer tokens than one window of model.context=128" in line]
    assert len(warning) == 1
    assert "small train" in warning[0]
    assert "big " not in warning[0]
