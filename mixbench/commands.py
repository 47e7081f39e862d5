"""The `mixbench` commands as plain functions of a config.

The command line calls them through Hydra. A notebook can call them with a config composed from
conf/ by `hydra.compose` (inside `hydra.initialize_config_dir`), for example `run(cfg)`.
"""

import importlib
import logging
import os
import re
import shlex
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mixbench.config_files import CONF_DIR
from mixbench.engine import run_method, save_method_result, setting_identity, setting_label
from mixbench.errors import ConfigError, MixbenchError, RunFailedError, unknown_name_error
from mixbench.method import available_methods, build_method, get_method_class
from mixbench.report import CORPUS, SIM, Filters, build_table, load_experiment, load_results, mixed_conditions, render_markdown, write_tables
from mixbench.runs import RunStore, folder_lock, require_writable, write_json_atomic
from mixbench.setting import CorpusSetting, check_settings
from mixbench.parallel import run_parallel, run_sequential
from mixbench.threads import available_cores, member_threads, set_torch_threads, warn_oversubscribed

log = logging.getLogger("mixbench")
# A val or test split that gives at most 1/EVAL_WINDOW_SHORTFALL of the evaluation windows that
# train.eval_tokens or train.test_tokens request gets a warning.
EVAL_WINDOW_SHORTFALL = 4

# The results_dir of every command's config file; a suggested command names any other folder.
DEFAULT_RESULTS_DIR = "results"


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def load_plugins(cfg) -> None:
    """Import the modules named in `plugins`, so that methods they register can be used by name."""
    for module in plugin_modules(cfg.get("plugins")):
        if module.endswith(".py") or module.startswith(".") or "/" in module or "\\" in module:
            raise ConfigError(
                f"plugins=[{module}] names a file, but plugins takes module names, as `import` does. Pass "
                f"plugins=[{Path(module).stem}] with the module's folder on PYTHONPATH."
            )
        try:
            importlib.import_module(module)
        except MixbenchError:
            # The registry's own errors (a name taken, a required method missing) name the class already.
            raise
        except ModuleNotFoundError as error:
            if not _names_module(error.name, module):
                raise ConfigError(_plugin_failed(module, error)) from error
            raise ConfigError(_plugin_not_found(module, error)) from None
        except Exception as error:  # noqa: BLE001 - a plugin may raise anything while it runs; say where
            raise ConfigError(_plugin_failed(module, error)) from error


def plugin_modules(value) -> list[str]:
    """Return the module names of a `plugins` setting: a list, or one name given without brackets."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    modules = list(value)
    invalid = [item for item in modules if not isinstance(item, str) or not item.strip()]
    if invalid:
        raise ConfigError(f"plugins={modules!r} contains {invalid!r}, which are not module names; give plugins=[MODULE,...].")
    return modules


def _names_module(missing: str | None, module: str) -> bool:
    """Return whether a ModuleNotFoundError for `missing` means that `module` itself (or a parent package) is absent."""
    return missing is not None and (module == missing or module.startswith(missing + "."))


def _plugin_not_found(module: str, error: ModuleNotFoundError) -> str:
    return (f"plugin module {module!r} could not be imported ({error}); put its folder on PYTHONPATH or install it, "
            f"then pass plugins=[{module}].")


def _plugin_failed(module: str, error: BaseException) -> str:
    """Describe an error raised while a plugin module ran, with the file and line that raised it."""
    location = _raised_at(error)
    where = f" at {location}" if location else ""
    return (f"plugin module {module!r} was found, but importing it failed{where}: {type(error).__name__}: {error}. "
            f"Fix the plugin, then run the command again.")


def _raised_at(error: BaseException) -> str:
    """Return 'FILE, line N' where `error` was raised, and the plugin's line that led there when it differs."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{error.filename}, line {error.lineno}"
    # The first frame is load_plugins itself. Frames in importlib (some named <frozen ...>) are the import machinery.
    machinery = str(Path(importlib.__file__).parent)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)[1:]
              if not frame.filename.startswith(("<frozen", machinery))]
    if not frames:
        return ""
    raised, plugin = frames[-1], frames[0]
    location = f"{raised.filename}, line {raised.lineno}"
    if plugin is not raised:
        location += f" (reached from {plugin.filename}, line {plugin.lineno})"
    return location


def _set_threads(train) -> None:
    """Set torch's CPU threads from `train.threads` (divided among parallel sweep members) and record the count.

    The count used replaces `train.threads` in the config, so that run specs record it.
    """
    set_torch_threads(train)


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
    context = int((cfg.get("model") or {}).get("context") or 0)
    _warn_short_splits(corpus, context)
    _log_few_eval_windows(corpus, context, cfg.get("train") or {})
    return corpus


def _warn_short_splits(corpus, context: int) -> None:
    """Warn when a split cannot hold one window of `context` + 1 tokens, which every run needs."""
    short = [f"{domain} {split} ({corpus.num_tokens(domain, split)} tokens)" for domain in corpus.domains
             for split in ("train", "val", "test") if corpus.num_tokens(domain, split) < context + 1]
    if context and short:
        log.warning(
            "%s: fewer tokens than one window of model.context=%d plus one, so runs on this corpus will be rejected. "
            "Add text to those domains or raise data.val_fraction / data.test_fraction.", "; ".join(short), context,
        )


def _log_few_eval_windows(corpus, context: int, train) -> None:
    """Warn when a val or test split gives far fewer evaluation windows than the train settings request.

    Such a split's loss rests on a few windows, so it is noisy, yet it counts as much as any other
    domain's. For a corpus prepared by an earlier command, the list alone is logged at info level.
    """
    from mixbench.train.sampler import evaluation_window_count

    budgets = {"val": train.get("eval_tokens"), "test": train.get("test_tokens", train.get("eval_tokens"))}
    if not context or budgets["val"] is None:
        return  # a command without model or training settings (laws reads run tables)
    settings = {"val": "train.eval_tokens", "test": "train.test_tokens"}
    fractions = {"val": "data.val_fraction", "test": "data.test_fraction"}
    short = []
    for split in ("val", "test"):
        requested = max(1, int(budgets[split]) // context)
        for domain in corpus.domains:
            tokens = corpus.num_tokens(domain, split)
            if tokens < context + 1:
                continue  # _warn_short_splits names these, and runs reject them
            windows = evaluation_window_count(tokens, context, int(budgets[split]))
            if windows * EVAL_WINDOW_SHORTFALL <= requested:
                short.append(f"{domain} {split}: {windows} of the {requested} windows that {settings[split]}="
                             f"{budgets[split]} requests ({tokens} tokens; raise {fractions[split]} or add text)")
    if not short:
        return
    if getattr(corpus, "reused", False):
        log.info("few evaluation windows: %s", "; ".join(short))
        return
    log.warning(
        "%s. Each evaluation window is model.context=%d tokens; a split with at most 1/%d of the requested windows "
        "gives a noisy loss, which weighs as much as any other domain's in the table's mean over domains.",
        "; ".join(short), context, EVAL_WINDOW_SHORTFALL,
    )


def _setting(cfg, corpus) -> CorpusSetting:
    model, train = _plain(cfg.model), _plain(cfg.train)
    check_settings(model, train)
    # Every split of every domain must hold one training window, checked before any run starts.
    corpus.check_min_tokens(int(model["context"]) + 1)
    return CorpusSetting(name=str(cfg.data.name), corpus=corpus, domains=corpus.domains, model=model, train=train)


def method_config(name: str, overrides: dict | None = None) -> dict:
    """Return a method's config: its method/NAME.yaml when present, then `overrides`.

    The file is looked up where `mixbench run method=NAME` finds it: in the package's conf/,
    then in the folders given as `hydra.searchpath=[file://DIR]`, so a plugin's own config
    file applies to `mixbench benchmark` too.
    """
    path = _method_file(name)
    if path is None:
        config = {"name": name}
    else:
        config = _plain(OmegaConf.load(path))
        if not config.get("name"):
            raise ConfigError(_unnamed_method_file(path, name))
    config.update(overrides or {})
    return config


def _method_file(choice: str) -> Path | None:
    """Return the method/CHOICE.yaml that Hydra picks for method=CHOICE, or None when there is none."""
    for folder in _config_folders():
        path = folder / "method" / f"{choice}.yaml"
        if path.exists():
            return path
    return None


def _unnamed_method_file(path: Path | str, choice: str) -> str:
    known = available_methods()
    if choice in known:
        return f"the config file {path} has no `name:` key; add the line `name: {choice}`, the name of the method it configures."
    return (f"the config file {path} has no `name:` key; add a line `name: NAME` with the name of the method it "
            f"configures (registered methods: {', '.join(known)}).")


def _run_method_config(cfg) -> dict:
    """Return `cfg.method` as a dict; raise ConfigError naming the config file when it has no `name:` key."""
    config = _plain(cfg.method)
    if config.get("name"):
        return config
    from hydra.core.hydra_config import HydraConfig

    choice = HydraConfig.get().runtime.choices.get("method") if HydraConfig.initialized() else None
    if not choice:
        raise ConfigError("the method config has no `name`; choose a method with method=NAME (for example method=stratified).")
    raise ConfigError(_unnamed_method_file(_method_file(choice) or f"method/{choice}.yaml", choice))


def _config_folders() -> list[Path]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    folders = [CONF_DIR]
    if HydraConfig.initialized():
        folders += [Path(to_absolute_path(entry[len("file://"):])) for entry in HydraConfig.get().searchpath
                    if str(entry).startswith("file://")]
    return folders


def run(cfg):
    """Run one method end to end and save its result under results_dir/<experiment.name>."""
    _set_threads(cfg.train)
    load_plugins(cfg)
    config = _run_method_config(cfg)
    method = build_method(config)
    store = RunStore(cfg.results_dir)
    kind = _experiment_kind(cfg.experiment)
    directory = Path(cfg.results_dir) / cfg.experiment.name
    _check_same_kind(directory, kind)
    seed = check_seed(cfg.seed)
    setting = build_setting(cfg)
    method.check(setting.context(seed))

    result = run_method(config, setting, store, seed)
    if not setting.is_main_process():
        return result
    saved = save_method_result(result, directory)
    # experiment.json records the kind of setting, so that `mixbench table` builds the right table.
    _write_experiment(directory, cfg.experiment.name, kind, [result.method], [result.seed],
                      setting_label(setting_identity(setting)), {})
    log.info("saved the result to %s (%s shows it)", saved, follow_up_command("table", cfg.results_dir, cfg.experiment.name))
    final = result.final
    if final.get("status") != "complete":
        raise ConfigError(f"run {final['id']} of method {result.method!r} failed: {final.get('error')}")
    if "true_mean_loss" in final:
        # The simulator's figure of merit is the true mean loss of its known law, as in its table.
        log.info("%s seed %d: final mean loss %.4f (run %s)", result.method, result.seed, final["true_mean_loss"], final["id"])
    else:
        perplexity = sum(final["test_perplexity"]) / len(final["test_perplexity"])
        log.info("%s seed %d: average test perplexity %.3f (run %s)", result.method, result.seed, perplexity, final["id"])
    return result


def follow_up_command(command: str, results_dir, experiment_name: str, *overrides: str) -> str:
    """Return `mixbench COMMAND experiment.name=NAME OVERRIDES` quoted for a shell, with results_dir=... unless it is ./results."""
    words = ["mixbench", command]
    if Path(str(results_dir)) != Path(DEFAULT_RESULTS_DIR):
        words.append(f"results_dir={results_dir}")
    words.append(f"experiment.name={experiment_name}")
    return shlex.join([*words, *overrides])


def benchmark_methods(experiment) -> list[str]:
    """Resolve the experiment's method list: a list of names, or "all" registered methods."""
    requested = experiment.methods
    overrides = _plain(experiment.get("method_overrides") or {})
    excluded = experiment.get("exclude") or []
    if isinstance(excluded, str):
        # A plain string would be read one letter at a time.
        raise ConfigError(f"experiment.exclude={excluded!r} is invalid; give a list of method names, like [{excluded}].")
    exclude = set(excluded)
    # A misspelt name in either would otherwise be ignored without a word.
    known = available_methods()
    for field, listed in (("experiment.exclude", sorted(exclude)), ("experiment.method_overrides", sorted(overrides))):
        for name in listed:
            if name not in known:
                raise unknown_name_error("method", name, known, f"Fix the name in {field}, or load the module that registers it with plugins=[MODULE].")
    if isinstance(requested, str):
        if requested != "all":
            raise ConfigError(f"experiment.methods={requested!r} is invalid; give a list of method names or 'all'.")
        names = [name for name in available_methods() if not get_method_class(name).needs_configuration or name in overrides]
    else:
        names = list(requested)
        for name in names:
            get_method_class(name)
        _check_unique("experiment.methods", names)
        unused = sorted(_overridden_on_command_line(overrides) - set(names))
        if unused:
            log.warning(
                "experiment.method_overrides sets %s, which experiment.methods=[%s] does not list, so those settings are "
                "unused; add the method to experiment.methods or drop its override.",
                ", ".join(unused), ",".join(names),
            )
    return [name for name in names if name not in exclude]


def _overridden_on_command_line(overrides: dict) -> set[str]:
    """Return the methods of `overrides` that the command's own overrides set (not the experiment's config file).

    An experiment file may set overrides for methods that a shorter methods list leaves out, and
    that is fine. An override the user typed for a method not listed is a likely mistake.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    typed = set()
    for item in HydraConfig.get().overrides.task:
        key = item.lstrip("+").split("=", 1)[0]
        if key == "experiment.method_overrides":
            typed |= set(overrides)
        elif key.startswith("experiment.method_overrides."):
            typed.add(key.split(".")[2])
    return typed & set(overrides)


def seed_list(value, key: str = "experiment.seeds") -> list[int]:
    """Return a list setting of seeds, each a whole number >= 0, or raise ConfigError naming `key`."""
    if isinstance(value, (str, int, float)) or value is None:
        raise ConfigError(f"{key}={value!r} is invalid; give a list of whole numbers >= 0, like [0,1,2].")
    seeds = list(value)
    for seed in seeds:
        if not _is_seed(seed):
            raise ConfigError(f"{key}={seeds} lists {seed!r}; seeds are whole numbers >= 0.")
    return seeds


def check_seed(seed, key: str = "seed") -> int:
    """Return `seed` if it is a whole number >= 0, or raise ConfigError naming `key`."""
    if not _is_seed(seed):
        raise ConfigError(f"{key}={seed!r} is invalid; a seed is a whole number >= 0.")
    return seed


def _is_seed(value) -> bool:
    # numpy's generators reject negative seeds, and a fraction would be cut to a whole number silently.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_unique(field: str, values: list) -> None:
    """Raise ConfigError when a list setting names a value twice."""
    repeated = sorted({str(value) for value in values if values.count(value) > 1})
    if repeated:
        raise ConfigError(f"{field}={list(values)} lists {', '.join(repeated)} more than once; list each once.")


def build_setting(cfg):
    """Build the experiment's setting: the simulator, or the corpus (prepared or loaded from the cache)."""
    if _experiment_kind(cfg.experiment) == "sim":
        from mixbench.sim.setting import SimSetting, warn_unused_overrides

        warn_unused_overrides()
        setting = SimSetting(_plain(cfg.sim))
    else:
        setting = _setting(cfg, prepare(cfg))
    # Tables name a setting by this label, which hashes the data of its runs (for a corpus: the
    # fingerprint, the tokenizer and the domains), so it differs from the corpus fingerprint.
    log.info("setting %s: tables label this setting's rows with it", setting_label(setting_identity(setting)))
    return setting


def _experiment_kind(experiment) -> str:
    """Return `experiment.setting`, checked: corpus (real training) or sim (the simulator)."""
    kind = experiment.get("setting", "corpus")
    if kind not in ("corpus", "sim"):
        raise ConfigError(f"experiment.setting={kind!r} is unknown; use 'corpus' or 'sim'.")
    return kind


def _check_same_kind(directory: Path, kind: str) -> None:
    """Raise ConfigError when the experiment's folder already has results of the other kind of setting."""
    earlier = load_experiment(directory)
    # An experiment.json without the field is read as the table reads it: corpus.
    earlier_kind = None if earlier is None else earlier.get("setting", "corpus")
    if earlier_kind not in (None, kind):
        raise ConfigError(
            f"{directory} contains results of experiment.setting={earlier_kind}, and this command trains with "
            f"experiment.setting={kind}. Set experiment.name to another name, so that each table compares one kind."
        )


def _benchmark_jobs(experiment) -> int:
    """Return `experiment.jobs`, the number of tasks that train side by side, checked."""
    jobs = experiment.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"experiment.jobs={jobs!r} is invalid; use a positive number of worker processes (1: one task at a time).")
    if jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"experiment.jobs={jobs} trains tasks in worker processes, which a multi-process launch cannot do; "
            f"set experiment.jobs=1 under accelerate launch or torchrun."
        )
    return jobs


def benchmark_workers(jobs: int, tasks: int, threads: int, cores: int) -> tuple[int, int]:
    """Return the worker processes for `tasks` tasks at `experiment.jobs`=`jobs`, and the torch threads of each.

    A worker beyond the number of tasks would sit idle, so there are min(jobs, tasks) of them, and
    they share `threads` (the command's count, already resolved from auto or 0), at least 1 each.
    Warns when the workers at one thread each still use more threads than `threads`.
    """
    workers = min(jobs, tasks)
    if workers <= 1:
        return 1, threads
    per_worker = member_threads(threads, workers, cores)
    warn_oversubscribed(threads, per_worker, workers, cores, "worker processes", "experiment.jobs")
    return workers, per_worker


def benchmark(cfg):
    """Run every method of the experiment at every seed, then write and print the table."""
    _reject_method_config(cfg)
    _set_threads(cfg.train)
    load_plugins(cfg)
    experiment = cfg.experiment
    jobs = _benchmark_jobs(experiment)
    store = RunStore(cfg.results_dir)
    overrides = _plain(experiment.get("method_overrides") or {})
    names = benchmark_methods(experiment)
    seeds = seed_list(experiment.seeds)
    _check_unique("experiment.seeds", seeds)
    if not names or not seeds:
        raise ConfigError(f"experiment {experiment.name!r} has no methods or no seeds; set experiment.methods and experiment.seeds.")

    # Build every method and check its settings before any training starts.
    configs = {name: method_config(name, overrides.get(name)) for name in names}
    _check_same_kind(Path(cfg.results_dir) / experiment.name, _experiment_kind(experiment))
    setting = build_setting(cfg)
    skipped = {}
    names = _applicable(names, configs, setting, seeds[0], every=isinstance(experiment.methods, str), skipped=skipped)

    directory = Path(cfg.results_dir) / experiment.name
    label = setting_label(setting_identity(setting))
    if setting.is_main_process():
        _write_experiment(directory, experiment.name, experiment.get("setting", "corpus"), names, seeds, label, skipped)
    log.info("benchmark %s: methods %s, seeds %s", experiment.name, ", ".join(names), seeds)
    tasks = [(seed, name) for seed in seeds for name in names]
    workers, worker_threads = benchmark_workers(jobs, len(tasks), int(cfg.train.threads), available_cores())
    if workers > 1:
        plain = _plain(cfg)
        plain["train"]["threads"] = worker_threads
        log.info("running %d tasks in %d worker processes with %s torch thread(s) each", len(tasks), workers, worker_threads)
        failures = run_parallel(plain, tasks, configs, directory, workers, build_setting)
    else:
        failures = run_sequential(tasks, configs, setting, store, directory)
    if not setting.is_main_process():
        return None
    _warn_earlier_results(directory, seeds, names, label, skipped)
    rows = table_for(directory, store)
    if failures:
        raise RunFailedError(
            f"{len(failures)} method run(s) failed: {', '.join(failures)}. The table marks them failed; the error of "
            f"each is in its file under {directory}/methods and in its run record.",
            rows=rows,
        )
    return rows


def _reject_method_config(cfg) -> None:
    """Raise ConfigError for a method config added with +method=NAME or +method.KEY=VALUE, which benchmark never reads."""
    method = cfg.get("method")
    if method is None:
        return
    name = method.get("name") if hasattr(method, "get") else None
    example = name or "NAME"
    added_override = f"+method={name}" if name else ", ".join(f"+method.{key}" for key in method)
    raise ConfigError(
        f"mixbench benchmark has no method config, so {added_override} would be ignored. "
        f"It runs the methods in experiment.methods: remove the +method override and list the method there, as in "
        f"'experiment.methods=[stratified,{example}]', with its settings as "
        f"++experiment.method_overrides.{example}.KEY=VALUE."
    )


def _warn_earlier_results(directory: Path, seeds: list[int], methods: list[str], label: str, skipped: dict) -> None:
    """Say so when the table will also summarise earlier results that this command did not produce.

    Those are other methods and settings (`label` is this command's), seeds it did not request,
    and methods with several sets of hyperparameters, each of which gets its own row. Methods in
    `skipped` were this command's too, and their rows say why they did not run.
    """
    results = load_results(directory)
    listed = {result["method"] for result in results} | set((load_experiment(directory) or {}).get("methods") or [])
    other_methods = sorted(listed - set(methods) - set(skipped))
    other_settings = sorted({setting_label(result.get("setting")) for result in results} - {label})
    if other_methods or other_settings:
        earlier = [f"methods {', '.join(other_methods)}"] if other_methods else []
        earlier += [f"settings {', '.join(other_settings)}"] if other_settings else []
        log.warning(
            "the table of %s also lists earlier results in that folder (%s), with `missing` rows where a method has "
            "no result in a setting. For a table of this command's methods and setting alone, run `%s`, or use another "
            "experiment.name.",
            directory, "; ".join(earlier),
            follow_up_command("table", directory.parent, directory.name, f"table.methods=[{','.join(methods)}]",
                              f"table.settings=[{label}]"),
        )
    earlier = sorted({int(result["seed"]) for result in results} - set(seeds))
    if earlier:
        log.warning(
            "the table of %s also includes seeds %s from earlier runs; use another experiment.name for a table of "
            "seeds %s alone, or `%s` for a filtered copy.",
            directory, earlier, seeds,
            follow_up_command("table", directory.parent, directory.name, f"table.seeds=[{','.join(map(str, seeds))}]"),
        )
    variants = sorted({result["name"] for result in results if result["name"] != result["method"]})
    if variants:
        log.warning(
            "the table of %s has one row per set of hyperparameters of a method: %s. Delete the files of sets you no "
            "longer want under %s/methods (the run_params field of each file lists its settings), or use another "
            "experiment.name.",
            directory, ", ".join(variants), directory,
        )


# `method.` at the start of a setting's key, as `mixbench run` takes the key and method checks name it.
_RUN_METHOD_KEY = re.compile(r"(?<![\w.+])method\.(?=[A-Za-z_])")


def benchmark_method_error(error: ConfigError, name: str) -> ConfigError:
    """Return `error` with each method.KEY in its message written as experiment.method_overrides.NAME.KEY.

    Method checks name their settings as `mixbench run` takes them, and a benchmark takes them
    under experiment.method_overrides. A message that already names method_overrides is kept.
    """
    message = str(error)
    if "method_overrides" in message:
        return error
    renamed = _RUN_METHOD_KEY.sub(f"experiment.method_overrides.{name}.", message)
    if renamed == message:
        return error
    return type(error)(renamed)


def _applicable(names, configs, setting, seed, every: bool, skipped: dict | None = None) -> list[str]:
    """Check each method's settings before training; with methods=all, skip those that cannot run here.

    The reason for each skipped method goes into `skipped`, keyed by method name.
    """
    kept = []
    for name in names:
        try:
            build_method(configs[name]).check(setting.context(seed))
        except ConfigError as raised:
            error = benchmark_method_error(raised, name)
            if not every:
                raise error from None
            log.info("skipping method %s in this setting: %s", name, error)
            if skipped is not None:
                skipped[name] = str(error)
            continue
        kept.append(name)
    return kept


def _write_experiment(directory: Path, name: str, kind: str, methods: list[str], seeds: list[int], label: str, skipped: dict) -> None:
    """Write experiment.json, merged with what earlier commands wrote there (in this or other settings).

    Methods and seeds are the union. `skipped` maps each method that could not run in setting
    `label` to the reason, so that the table shows it as skipped, not missing. The folder lock keeps
    the members of a parallel sweep from losing each other's entries.
    """
    path = directory / "experiment.json"
    with folder_lock(directory):
        earlier = load_experiment(directory) or {}
        merged_methods = list(dict.fromkeys([*(earlier.get("methods") or []), *methods, *skipped]))
        merged_seeds = sorted(set(earlier.get("seeds") or []) | set(seeds))
        by_setting = dict(earlier.get("skipped") or {})
        # Methods this command trains leave the setting's skipped list; earlier skips of others stay.
        still_skipped = {name: reason for name, reason in (by_setting.get(label) or {}).items() if name not in methods}
        by_setting[label] = {**still_skipped, **skipped}
        entry = {"name": name, "setting": kind, "methods": merged_methods, "seeds": merged_seeds, "skipped": by_setting}
        write_json_atomic(path, entry)


def table_for(directory: Path, store: RunStore, filters: Filters | None = None, out_dir: Path | None = None) -> list[dict]:
    """Rebuild, write and print the table of the experiment in `directory`; return its rows.

    The table files go to `out_dir`, or to `directory` when it is None. ConfigError names that
    folder when it is not writable.
    """
    directory = Path(directory)
    results = load_results(directory)
    expected = load_experiment(directory)
    kind = SIM if expected and expected.get("setting") == "sim" else CORPUS
    table = build_table(results, store, kind, expected, filters)
    _warn_mixed_runs(results, store, directory)
    target = Path(out_dir) if out_dir is not None else directory
    fix = "set out_dir=PATH to a folder you can write to." if out_dir is not None else (
        "set out_dir=PATH to write the table files to a folder you can write to; the records are only read.")
    require_writable(target, "table", fix)
    title = f"Comparison table: {directory.name}"
    paths = write_tables(table, target, title)
    print(render_markdown(table, title))
    log.info("wrote %s", ", ".join(str(path) for path in paths))
    return table.rows


def _warn_mixed_runs(results: list[dict], store: RunStore, directory: Path) -> None:
    """Say so when the final runs of one setting differ in length (exploration included) or in their settings."""
    for label, listing in mixed_conditions(results, store).items():
        log.warning(
            "the table of %s has final runs of different lengths or settings in setting %s (%s), because some methods "
            "ran with other training settings. Seeds whose final runs differ from stratified's are not compared with "
            "it. Rerun them with one set, or use another experiment.name per set.",
            directory, label, listing,
        )


def table(cfg):
    """Rebuild results_dir/<experiment>/table.md, table.csv and table.tex from records only.

    The run store is opened read-only, so a read-only results folder can be tabulated into `out_dir`.
    """
    filters = Filters.from_config(cfg.get("table"))
    name = str(cfg.experiment.name)
    directory = Path(cfg.results_dir) / name
    _check_has_results(directory, cfg.results_dir, name)
    out_dir = cfg.get("out_dir")
    return table_for(directory, RunStore(cfg.results_dir, read_only=True), filters, Path(out_dir) if out_dir else None)


def _check_has_results(directory: Path, results_dir, name: str) -> None:
    """Raise ConfigError naming results_dir and experiment.name when `directory` has no method results."""
    if any((directory / "methods").glob("*.json")):
        return
    reports = sorted(path.name for path in directory.glob("laws_*.md"))
    if reports:
        raise ConfigError(
            f"{directory} contains the report of a law sweep ({', '.join(reports)}), not method results: `mixbench laws` "
            f"writes that report and `mixbench figures` draws it, while `mixbench table` summarises method results."
        )
    listed = (load_experiment(directory) or {}).get("methods")
    listing = f" experiment.json lists {', '.join(listed)}, but none has a result yet." if listed else ""
    raise ConfigError(
        f"no method results under {directory / 'methods'}.{listing} Check results_dir={results_dir} and "
        f"experiment.name={name}, or train the experiment first (`mixbench benchmark` or `mixbench run` with the same settings)."
    )


from mixbench.figures import figures
from mixbench.law_accuracy.command import laws

TASKS = {"prepare": prepare, "run": run, "benchmark": benchmark, "table": table, "laws": laws, "figures": figures}
