"""Static-law sweep: train runs on a design of static mixtures, then score the laws on held-out runs.

Every run goes through the run store, so runs are cached by their content hash and shared with
other commands (a uniform-mixture run here is the same run as a stratified run elsewhere).
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.engine import execute_run
from mixbench.errors import ConfigError, DataError
from mixbench.law_accuracy.command import cv_rows, law_names, log_skipped, mark_undefined, plain, require_scored
from mixbench.law_accuracy.report import averages_markdown, predictions_path, rows_markdown, write_predictions, write_report
from mixbench.law_accuracy.scoring import MIN_SPEARMAN_POINTS, make_law, score_laws
from mixbench.law_accuracy.tables import RunTable
from mixbench.runs import RunStore, write_json_atomic, write_text_atomic
from mixbench.simplex import DESIGN_KINDS, design
from mixbench.threads import set_torch_threads

log = logging.getLogger(__name__)

SETTINGS = ("corpus", "sim")
LOSS_SPLITS = ("val", "test")


def sweep_settings(options, spec) -> dict[str, Any]:
    """Return the settings a sweep's report depends on, flat: its experiment options and its runs' data, model and training.

    `spec` is any run of the sweep. Its mixture and role are left out, and so are the training
    settings that change no loss (threads, trackers, checkpoint and validation intervals).
    """
    from dataclasses import asdict

    from mixbench.report import UNCOMPARED_TRAIN_KEYS

    flat = {f"experiment.{key}": value for key, value in asdict(options).items()}
    flat |= {f"data.{key}": value for key, value in spec.data.items()}
    flat |= {f"model.{key}": value for key, value in spec.model.items()}
    flat |= {f"train.{key}": value for key, value in spec.train.items() if key not in UNCOMPARED_TRAIN_KEYS}
    return _canonical_json(flat)


def _canonical_json(value: Any) -> Any:
    """Return `value` as it reads back from JSON (tuples become lists), so that stored and new settings compare equal."""
    import json

    return json.loads(json.dumps(value, default=str))


def warn_replaced_report(record: Path, settings: dict[str, Any], report: Path) -> None:
    """Warn when `record` (the JSON a sweep writes beside its report) records another sweep's settings.

    The sweep then replaces that report; the earlier runs stay in the run store.
    """
    if not record.is_file():
        return
    import json

    try:
        earlier = json.loads(record.read_text()).get("sweep_settings")
    except (OSError, ValueError):
        earlier = None
    if earlier == settings:
        return
    if earlier is None:
        # A report written before settings were recorded: nothing shows whether they differ.
        log.info("%s contains the report of an earlier sweep, whose settings were not recorded; this sweep replaces it.", report)
        return
    keys = sorted(key for key in set(earlier) | set(settings) if earlier.get(key) != settings.get(key))
    shown = ", ".join(f"{key}: {earlier.get(key)!r} -> {settings.get(key)!r}" for key in keys[:6])
    changed = f"it differs in {shown}{', ...' if len(keys) > 6 else ''}"
    log.warning(
        "%s contains the report of an earlier sweep, which this one replaces (%s). Its runs stay in the run store; to keep "
        "both reports, give this sweep another experiment.name.", report, changed,
    )


def int_option(experiment, key: str, minimum: int) -> int:
    """Return experiment.<key> as an integer >= minimum, or raise ConfigError naming the key."""
    value = experiment.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"experiment.{key}={value!r} is invalid; it must be a whole number >= {minimum}.")
    return value


def choice_option(experiment, key: str, choices: tuple[str, ...], default: str) -> str:
    """Return experiment.<key> if it is one of `choices`, or raise ConfigError listing them."""
    value = experiment.get(key, default)
    if value not in choices:
        raise ConfigError(f"experiment.{key}={value!r} is unknown; use one of {', '.join(choices)}.")
    return value


def fraction_option(experiment, key: str) -> float:
    """Return experiment.<key> as a number strictly between 0 and 1, or raise ConfigError."""
    value = experiment.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise ConfigError(f"experiment.{key}={value!r} is invalid; it must be a fraction strictly between 0 and 1.")
    return float(value)


def build_setting(cfg):
    """Return the experiment's setting: the prepared corpus with cfg.model and cfg.training, or the simulator."""
    kind = choice_option(cfg.experiment, "setting", SETTINGS, "corpus")
    if kind == "sim":
        from mixbench.sim.setting import SimSetting, warn_unused_overrides

        if cfg.get("sim") is None:
            sweep = cfg.experiment.get("sweep") or "static"
            raise ConfigError(
                f"experiment.setting=sim needs a `sim` block (domains, steps, eval_noise, ...), which "
                f"experiment=laws_{sweep}_sim has; use that config (conf/experiment/laws_{sweep}_sim.yaml)."
            )
        warn_unused_overrides("training")
        return SimSetting(plain(cfg.sim))

    from mixbench.data import prepare_corpus
    from mixbench.setting import CorpusSetting, check_settings

    training, model = plain(cfg.get("training")), plain(cfg.model)
    if training is None:
        raise ConfigError("experiment.setting=corpus needs a `training` block; the law sweep experiments include train/cpu as `training`.")
    try:
        check_settings(model, training)
    except ConfigError as error:
        # The checks name the `train` group; in this command the same settings live under `training`.
        raise ConfigError(str(error).replace("train.", "training.")) from None
    # The same rule as the other commands: a count, `auto`, or 0 for torch's default.
    set_torch_threads(training)
    corpus = prepare_corpus(plain(cfg.data))
    return CorpusSetting(name=str(cfg.data.name), corpus=corpus, domains=corpus.domains, model=model, train=training)


# Minimum number of runs a static sweep fits its laws on. A law that needs more is reported as skipped.
MIN_STATIC_FIT = 2
# Runs held out from every fit, whatever the held-out fraction, because R^2 needs two or more.
MIN_HELD_OUT = 2


def held_out_count(count: int, held_out_fraction: float) -> int:
    """Return how many of `count` runs `split_rows` holds out: the fraction, rounded, and at least MIN_HELD_OUT."""
    return max(MIN_HELD_OUT, int(round(held_out_fraction * count)))


def fewest_runs(held_out_fraction: float, minimum_fit: int) -> int:
    """Return the fewest runs whose split leaves `minimum_fit` runs to fit on.

    The fit count, count - held_out_count(count), never falls as count grows (the rounded
    held-out count rises by at most 1 per run), so the first count that suffices is the minimum.
    """
    count = minimum_fit + MIN_HELD_OUT
    while count - held_out_count(count, held_out_fraction) < minimum_fit:
        count += 1
    return count


def check_split(count: int, held_out_fraction: float, minimum_fit: int, count_key: str, purpose: str,
                warn: bool = True) -> None:
    """Raise ConfigError, before anything trains, when the held-out split of `count` runs leaves fewer than `minimum_fit` to fit on.

    `count_key` is the setting that sets `count` (experiment.mixtures, experiment.children), and
    `purpose` names what needs the `minimum_fit` runs. With `warn`, a split that holds out fewer
    than 3 runs, too few for Spearman's correlation, is named in a warning.
    """
    n_held = held_out_count(count, held_out_fraction)
    if warn and n_held < MIN_SPEARMAN_POINTS:
        log.warning(
            "%s=%d holds out only %d: R^2 will rest on %d points and Spearman's correlation will be left blank; "
            "raise experiment.held_out_fraction or %s.", count_key, count, n_held, n_held, count_key,
        )
    if count - n_held >= minimum_fit:
        return
    fix = f"use {count_key}={fewest_runs(held_out_fraction, minimum_fit)} or more"
    if count - MIN_HELD_OUT >= minimum_fit:
        fix += ", or lower experiment.held_out_fraction"
    raise ConfigError(
        f"{count_key}={count} is too few: experiment.held_out_fraction={held_out_fraction} holds out {n_held} of the "
        f"{count} and leaves {count - n_held} to fit on, but {purpose} needs at least {minimum_fit}. At least "
        f"{MIN_HELD_OUT} are always held out, because held-out R^2 needs two points. To fix it, {fix}."
    )


def split_rows(mixtures: np.ndarray, held_out_fraction: float, seed: int, minimum_fit: int = MIN_STATIC_FIT,
               count_key: str = "experiment.mixtures", purpose: str = "the fit") -> tuple[np.ndarray, np.ndarray]:
    """Return (fit positions, held-out positions): a seeded random split of the runs with these mixtures.

    `held_out_count` runs are held out; `check_split` has checked the split before training.
    Single-domain runs (a weight of 1) are held out only when the other runs do not suffice: a
    law fitted without the run dominated by a domain has to extrapolate that domain's coefficient.
    """
    k = len(mixtures)
    check_split(k, held_out_fraction, minimum_fit, count_key, purpose, warn=False)
    n_held = held_out_count(k, held_out_fraction)
    rng = np.random.default_rng([seed, 1])
    single = np.max(mixtures, axis=1) >= 1.0 - 1e-9
    order = np.concatenate([rng.permutation(np.flatnonzero(~single)), rng.permutation(np.flatnonzero(single))])
    return np.sort(order[n_held:]), np.sort(order[:n_held])


@dataclass(frozen=True)
class StaticOptions:
    """The settings of a static-law sweep, read from the experiment config."""

    name: str
    seed: int
    mixtures: int
    design: str
    held_out_fraction: float
    laws: list[str]
    cv_folds: int
    loss_split: str

    @classmethod
    def from_config(cls, experiment) -> "StaticOptions":
        cv_folds = int_option(experiment, "cv_folds", 0)
        if cv_folds == 1:
            raise ConfigError("experiment.cv_folds=1 is invalid; use 0 to turn cross-validation off, or 2 or more folds.")
        mixtures = int_option(experiment, "mixtures", 3)
        if cv_folds > mixtures:
            raise ConfigError(f"experiment.cv_folds={cv_folds} exceeds the {mixtures} runs of the sweep (experiment.mixtures).")
        return cls(
            name=str(experiment.name),
            seed=int_option(experiment, "seed", 0),
            mixtures=mixtures,
            design=choice_option(experiment, "design", tuple(DESIGN_KINDS), "cover"),
            held_out_fraction=fraction_option(experiment, "held_out_fraction"),
            laws=law_names(experiment.get("laws"), "experiment.laws"),
            cv_folds=cv_folds,
            loss_split=choice_option(experiment, "loss_split", LOSS_SPLITS, "val"),
        )


def train_static_runs(setting, store: RunStore, options: StaticOptions) -> tuple[RunTable, list[dict]]:
    """Train (or reuse) one run per design mixture and return their final losses as a run table."""
    m = len(setting.domains)
    mixtures = design(m, options.mixtures, options.design, rng=options.seed, setting="experiment.design")
    losses, summaries = [], []
    for number, mixture in enumerate(mixtures, start=1):
        spec = setting.spec(options.seed, mixture=mixture, role="law_sweep")
        log.info("static sweep run %d/%d: %s mixture %s", number, len(mixtures), spec.id,
                 " ".join(f"{w:.3f}" for w in mixture))
        record, reused = store.get_or_run(spec, lambda spec, directory: execute_run(spec, setting, directory))
        if record.get("status") != "complete":
            raise DataError(
                f"run {spec.id} of the static sweep failed ({record.get('error')}); delete "
                f"{store.run_dir(spec)} to retry, or lower the learning rate."
            )
        loss = record["val_losses"] if options.loss_split == "val" else record["test_losses"]
        losses.append(loss)
        summaries.append({"id": spec.id, "mixture": mixture.tolist(), "losses": loss, "reused": reused})
    names = tuple(setting.domains)
    index = tuple(summary["id"] for summary in summaries)
    table = RunTable(names, names, mixtures, np.asarray(losses, dtype=np.float64), index, options.name)
    return table, summaries


def run_static_sweep(cfg) -> list[dict[str, Any]]:
    """Run the static sweep that the config describes; see `static_sweep`."""
    options = StaticOptions.from_config(cfg.experiment)
    setting = build_setting(cfg)
    return static_sweep(setting, RunStore(cfg.results_dir), options, Path(cfg.results_dir) / options.name)


def check_law_runs(options: StaticOptions, m: int) -> None:
    """Compare each law's fewest runs for m domains with the sweep's fit runs, before anything trains.

    Raise ConfigError when no law can be fitted; warn for each law that will be reported as skipped.
    """
    n_fit = options.mixtures - held_out_count(options.mixtures, options.held_out_fraction)
    needs = {name: make_law(name, options.seed).min_runs(m) for name in options.laws}
    short = {name: need for name, need in needs.items() if need > n_fit}
    if not short:
        return
    needs_text = "; ".join(
        f"{name} needs {need} (experiment.mixtures={fewest_runs(options.held_out_fraction, need)} or more)"
        for name, need in short.items()
    )
    split = (f"experiment.mixtures={options.mixtures} leaves {n_fit} runs to fit on at "
             f"experiment.held_out_fraction={options.held_out_fraction}, and at {m} domains {needs_text}")
    if len(short) == len(needs):
        fixes = ["raise experiment.mixtures"]
        if options.mixtures - MIN_HELD_OUT >= min(needs.values()):
            fixes.append("lower experiment.held_out_fraction")
        if "linear" not in needs:
            fixes.append("choose laws that need fewer runs (experiment.laws=[linear] needs the fewest)")
        listed = ", ".join(fixes[:-1]) + f" or {fixes[-1]}" if len(fixes) > 1 else fixes[0]
        raise ConfigError(f"no law of experiment.laws=[{','.join(options.laws)}] can be fitted: {split}. To fix it, {listed}.")
    log.warning("%s; %s will be reported as skipped.", split, " and ".join(short))


def static_sweep(setting, store: RunStore, options: StaticOptions, directory: Path) -> list[dict[str, Any]]:
    """Train the static sweep, score each law on the held-out runs, and write laws_static.csv and .md to `directory`."""
    check_law_runs(options, len(setting.domains))
    # Laws that need fewer runs than MIN_STATIC_FIT would still fail on the split, so it is checked before training too.
    check_split(options.mixtures, options.held_out_fraction, MIN_STATIC_FIT, "experiment.mixtures", "fitting the laws")
    settings = sweep_settings(options, setting.spec(options.seed, mixture=np.full(len(setting.domains), 1 / len(setting.domains))))
    warn_replaced_report(directory / "laws_static_runs.json", settings, directory / "laws_static.csv")
    table, summaries = train_static_runs(setting, store, options)

    fit_rows, held_rows = split_rows(table.P, options.held_out_fraction, options.seed, purpose="fitting the laws")
    fit, held = table.subset(fit_rows, name="fit"), table.subset(held_rows, name="held_out")
    predictions: list[dict[str, Any]] = []
    rows = score_laws(fit, [held], options.laws, seed=options.seed, predictions=predictions)
    if options.cv_folds:
        rows += cv_rows(table, options.laws, options.cv_folds, options.seed, predictions)
    rows = mark_undefined(rows)

    held_ids = set(held.index)
    for summary in summaries:
        summary["split"] = "held_out" if summary["id"] in held_ids else "fit"
    write_json_atomic(directory / "laws_static_runs.json", {
        "setting": setting.name, "domains": list(table.domains), "loss_split": options.loss_split, "runs": summaries,
        "sweep_settings": settings,
    })
    write_report(rows, directory / "laws_static.csv")
    write_predictions(predictions, predictions_path(directory / "laws_static.csv"))
    markdown = _static_markdown(options, setting, fit, held, rows)
    write_text_atomic(directory / "laws_static.md", markdown)
    print(markdown, end="")
    log_skipped(rows)
    log.info("wrote %s and %s", directory / "laws_static.csv", directory / "laws_static.md")
    require_scored(rows, directory / "laws_static.csv",
                   "raise experiment.mixtures, or choose laws that need fewer runs (experiment.laws=[linear] needs the fewest)")
    return rows


def _static_markdown(options: StaticOptions, setting, fit: RunTable, held: RunTable, rows: list[dict]) -> str:
    steps = setting.spec(options.seed, mixture=np.full(len(setting.domains), 1 / len(setting.domains))).train["steps"]
    lines = [
        f"# Static mixing laws: {options.name}",
        "",
        f"{len(fit) + len(held)} runs of {steps} steps on a {options.design} design over {len(setting.domains)} domains "
        f"({', '.join(setting.domains)}), setting {setting.name}, seed {options.seed}. The laws are fitted on "
        f"{len(fit)} runs and scored on the {len(held)} held-out runs (test set `held_out`, single-domain runs stay in the fit "
        f"when enough other runs exist)"
        + (f", and by {options.cv_folds}-fold cross-validation over all runs (test set `cv`)." if options.cv_folds else "."),
        f"Targets are the final {options.loss_split} losses per domain.",
        "",
        "## Averages over targets",
        "",
        averages_markdown(rows),
        "## Per target",
        "",
        rows_markdown(rows),
    ]
    return "\n".join(lines)
