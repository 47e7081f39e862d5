"""The `mixbench` commands as plain functions of a config.

The command line calls them through Hydra. A notebook can call them with a config composed from
conf/ by `hydra.compose` (inside `hydra.initialize_config_dir`), for example `run(cfg)`.
"""

import importlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mixbench.engine import run_method, save_method_result
from mixbench.errors import ConfigError
from mixbench.method import available_methods, build_method, get_method_class
from mixbench.report import HEADLINE, SIM_HEADLINE, load_results, summarize, summarize_sim, to_markdown, write_tables
from mixbench.runs import RunStore, write_json_atomic
from mixbench.setting import CorpusSetting, check_settings

log = logging.getLogger("mixbench")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def load_plugins(cfg) -> None:
    """Import the modules named in `plugins`, so that methods they register can be used by name."""
    for module in cfg.get("plugins") or []:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"plugin module {module!r} could not be imported ({error}); put its folder on PYTHONPATH "
                f"or install it, then pass plugins=[{module}]."
            ) from None


def _set_threads(train: dict) -> None:
    threads = int(train.get("threads", 0) or 0)
    if threads < 0:
        raise ConfigError(f"train.threads={threads} is invalid; use a positive thread count (or 0 for torch's default).")
    if threads:
        torch.set_num_threads(threads)


def prepare(cfg):
    """Build or verify the corpus described by `cfg.data` and log one line per domain."""
    from mixbench.data import prepare_corpus

    corpus = prepare_corpus(_plain(cfg.data))
    for domain in corpus.domains:
        log.info(
            "domain %-13s train %9d  val %8d  test %8d tokens",
            domain,
            corpus.num_tokens(domain, "train"),
            corpus.num_tokens(domain, "val"),
            corpus.num_tokens(domain, "test"),
        )
    log.info("corpus %s (tokenizer %s, fingerprint %s)", corpus.root, corpus.tokenizer_id, corpus.fingerprint[:16])
    return corpus


def _setting(cfg, corpus) -> CorpusSetting:
    model, train = _plain(cfg.model), _plain(cfg.train)
    check_settings(model, train)
    # Every split of every domain must hold one training window, checked before any run starts.
    corpus.check_min_tokens(int(model["context"]) + 1)
    return CorpusSetting(name=str(cfg.data.name), corpus=corpus, domains=corpus.domains, model=model, train=train)


def method_config(name: str, overrides: dict | None = None) -> dict:
    """Return a method's config: its conf/method file when present, then `overrides`."""
    path = CONF_DIR / "method" / f"{name}.yaml"
    config = _plain(OmegaConf.load(path)) if path.exists() else {"name": name}
    config.update(overrides or {})
    return config


def run(cfg):
    """Run one method end to end and save its result under results_dir/<experiment.name>."""
    train = _plain(cfg.train)
    _set_threads(train)
    load_plugins(cfg)
    store = RunStore(cfg.results_dir)
    config = _plain(cfg.method)
    method = build_method(config)
    corpus = prepare(cfg)
    setting = _setting(cfg, corpus)
    method.check(setting.context(int(cfg.seed)))

    result = run_method(config, setting, store, int(cfg.seed))
    if not setting.is_main_process():
        return result
    save_method_result(result, Path(cfg.results_dir) / cfg.experiment.name)
    final = result.final
    if final.get("status") != "complete":
        raise ConfigError(f"run {final['id']} of method {result.method!r} failed: {final.get('error')}")
    log.info(
        "%s seed %d: average test perplexity %.3f (run %s)",
        result.method,
        result.seed,
        sum(final["test_perplexity"]) / len(final["test_perplexity"]),
        final["id"],
    )
    return result


def benchmark_methods(experiment) -> list[str]:
    """Resolve the experiment's method list: a list of names, or "all" registered methods."""
    requested = experiment.methods
    overrides = _plain(experiment.get("method_overrides") or {})
    exclude = set(experiment.get("exclude") or [])
    if isinstance(requested, str):
        if requested != "all":
            raise ConfigError(f"experiment.methods={requested!r} is invalid; give a list of method names or 'all'.")
        names = [name for name in available_methods() if not get_method_class(name).needs_configuration or name in overrides]
    else:
        names = list(requested)
        for name in names:
            get_method_class(name)
    return [name for name in names if name not in exclude]


def benchmark(cfg):
    """Run every method of the experiment at every seed, then write and print the table."""
    train = _plain(cfg.train)
    _set_threads(train)
    load_plugins(cfg)
    store = RunStore(cfg.results_dir)
    experiment = cfg.experiment
    overrides = _plain(experiment.get("method_overrides") or {})
    names = benchmark_methods(experiment)
    seeds = [int(seed) for seed in experiment.seeds]
    if not names or not seeds:
        raise ConfigError(f"experiment {experiment.name!r} has no methods or no seeds; set experiment.methods and experiment.seeds.")

    # Build every method and check its settings before any training starts.
    configs = {name: method_config(name, overrides.get(name)) for name in names}
    setting_name = experiment.get("setting", "corpus")
    if setting_name == "sim":
        from mixbench.sim.setting import SimSetting

        setting = SimSetting(_plain(cfg.sim))
    elif setting_name == "corpus":
        setting = _setting(cfg, prepare(cfg))
    else:
        raise ConfigError(f"experiment.setting={setting_name!r} is unknown; use 'corpus' or 'sim'.")
    names = _applicable(names, configs, setting, seeds[0], every=isinstance(experiment.methods, str))

    directory = Path(cfg.results_dir) / experiment.name
    if setting.is_main_process():
        write_json_atomic(directory / "experiment.json", {"name": experiment.name, "setting": setting_name, "methods": names, "seeds": seeds})
    log.info("benchmark %s: methods %s, seeds %s", experiment.name, ", ".join(names), seeds)
    for seed in seeds:
        for name in names:
            result = run_method(configs[name], setting, store, seed)
            if setting.is_main_process():
                save_method_result(result, directory)
    if not setting.is_main_process():
        return None
    return table_for(directory, store)


def _applicable(names, configs, setting, seed, every: bool) -> list[str]:
    """Check each method's settings before training; with methods=all, skip those that cannot run here."""
    kept = []
    for name in names:
        try:
            build_method(configs[name]).check(setting.context(seed))
        except ConfigError as error:
            if not every:
                raise
            log.info("skipping method %s in this setting: %s", name, error)
            continue
        kept.append(name)
    return kept


def table_for(directory: Path, store: RunStore) -> list[dict]:
    """Rebuild, write and print the table of the experiment in `directory`."""
    results = load_results(directory)
    settings = directory / "experiment.json"
    simulated = settings.exists() and json.loads(settings.read_text()).get("setting") == "sim"
    if simulated:
        rows, headline = summarize_sim(results, store), SIM_HEADLINE
    else:
        rows, headline = summarize(results, store), HEADLINE
    markdown, _ = write_tables(rows, directory, headline)
    print(to_markdown(rows, headline))
    log.info("wrote %s and %s", markdown, markdown.with_suffix(".csv"))
    return rows


def table(cfg):
    """Rebuild results_dir/<experiment>/table.md and table.csv from records only."""
    directory = Path(cfg.results_dir) / str(cfg.experiment.name)
    return table_for(directory, RunStore(cfg.results_dir))


from mixbench.law_accuracy.command import laws

TASKS = {"prepare": prepare, "run": run, "benchmark": benchmark, "table": table, "laws": laws}
