"""Shared parts of the figure scripts: reading an experiment's records and saving reproducible files.

Every figure is drawn on a `matplotlib.figure.Figure` with the Agg canvas, never through pyplot,
so building figures changes no global backend or state of the calling program.
"""

import argparse
import io
import json
import logging
import os
import re
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.text import Text
from matplotlib.ticker import EngFormatter, FixedLocator, Formatter, MaxNLocator, NullFormatter, ScalarFormatter

log = logging.getLogger("mixbench.figures")

FORMATS = ("png", "pdf")
DPI = 150
# Without these keys matplotlib writes its version (PNG) and the date (PDF) into the files,
# so rebuilding a figure from the same records would change its bytes.
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}}


class MissingInput(Exception):
    """A figure's inputs are absent from the results folder; the message names what is missing."""


@dataclass(frozen=True)
class MethodRun:
    """One method at one seed: its result file and the run records it points to.

    `mixing` is the run in which the method chose its mixture: the proxy run of DoReMi and
    DoGE (their final run trains on the proxy's averaged weights), else the final run.
    """

    method: str
    seed: int
    result: dict
    final: dict
    mixing: dict
    extra: tuple[dict, ...]

    @property
    def mixing_label(self) -> str:
        return f"{self.method} (proxy run)" if self.mixing is not self.final else self.method


def experiment_dir(results_dir: str | Path, experiment: str) -> Path:
    return Path(results_dir) / experiment


def default_out_dir(results_dir: str | Path, experiment: str) -> Path:
    """Return where an experiment's figures go: results_dir/<experiment>/figures."""
    return experiment_dir(results_dir, experiment) / "figures"


def read_record(results_dir: str | Path, run_id: str) -> dict | None:
    """Return the record of run `run_id` from results_dir/runs, or None when it has none."""
    path = Path(results_dir) / "runs" / run_id / "record.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def result_setting(result: dict) -> str:
    """Return the setting label of a method result (`default-1a2b3c4d`; `unnamed` in older results)."""
    from mixbench.engine import setting_label

    return setting_label(result.get("setting"))


def experiment_settings(results_dir: str | Path, experiment: str) -> list[str]:
    """Return the sorted setting labels of an experiment's method results."""
    paths = (experiment_dir(results_dir, experiment) / "methods").glob("*.json")
    return sorted({result_setting(json.loads(path.read_text())) for path in paths})


def load_method_runs(results_dir: str | Path, experiment: str, setting: str | None = None) -> list[MethodRun]:
    """Read every method result of an experiment (of one setting, when given) with its complete run records.

    Results are sorted by method and seed. A result whose final run, proxy run or extra runs lack a
    complete record is left out with a warning. Raise MissingInput when the experiment has no
    method results or none is complete.
    """
    methods_dir = experiment_dir(results_dir, experiment) / "methods"
    paths = sorted(methods_dir.glob("*.json"))
    if not paths:
        raise MissingInput(f"no method results under {methods_dir}")
    from mixbench.report import name_variants

    # A method with several sets of hyperparameters gets one name per set, as in the table.
    results = name_variants([json.loads(path.read_text()) for path in paths])
    runs = []
    for path, result in zip(paths, results):
        if setting is not None and result_setting(result) != setting:
            continue
        loaded = _load_runs_of(results_dir, result)
        if isinstance(loaded, str):
            log.warning("figures: leaving out %s: %s", path.name, loaded)
            continue
        runs.append(loaded)
    if not runs:
        raise MissingInput(f"no method result under {methods_dir} has complete run records in {Path(results_dir) / 'runs'}")
    return sorted(runs, key=lambda run: (run.method, run.seed))


def _load_runs_of(results_dir: str | Path, result: dict) -> MethodRun | str:
    """Return the MethodRun of one result, or a reason why its records are unusable."""
    from mixbench.report import distinct_extra_runs

    final = read_record(results_dir, result["final_run"])
    if final is None or final.get("status") != "complete":
        return f"final run {result['final_run']} has no complete record"
    extra = []
    for entry in distinct_extra_runs(result):
        record = read_record(results_dir, entry["id"])
        if record is None:
            return f"{entry.get('role') or 'extra'} run {entry['id']} has no record"
        extra.append(record)
    proxies = [record for record in extra if record.get("role") == "proxy"]
    mixing = proxies[0] if proxies else final
    return MethodRun(result["name"], int(result["seed"]), result, final, mixing, tuple(extra))


def pick_seed(runs: list[MethodRun], seed: int | None) -> tuple[int, list[MethodRun]]:
    """Return the seed to show (the lowest recorded one when `seed` is None) and that seed's runs."""
    seeds = sorted({run.seed for run in runs})
    chosen = seeds[0] if seed is None else int(seed)
    if chosen not in seeds:
        raise MissingInput(f"no method results for seed {chosen} (recorded seeds: {', '.join(map(str, seeds))})")
    return chosen, [run for run in runs if run.seed == chosen]


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", "*", ">", "h")
LINESTYLES = ("-", "--", ":", "-.")


def method_colors(methods: list[str]) -> dict[str, tuple]:
    """Return one colour per method, fixed by the sorted method names, so figures agree with each other."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(set(methods)) <= 10 else "tab20"]
    return {name: palette(index % palette.N) for index, name in enumerate(sorted(set(methods)))}


def method_styles(methods: list[str]) -> dict[str, dict]:
    """Return a colour, marker and line style per method, fixed by the sorted method names.

    Colours come from tab10 and repeat after ten methods. The line style changes with each
    repeat, and the markers cycle with a period of eleven. So no two of 40 methods look alike,
    and methods whose points coincide still differ in marker.
    """
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {
        name: {"color": palette(index % 10), "marker": MARKERS[index % len(MARKERS)], "linestyle": LINESTYLES[index // 10 % len(LINESTYLES)]}
        for index, name in enumerate(sorted(set(methods)))
    }


@contextmanager
def figure(columns: int, rows: int, width: float = 3.4, height: float = 2.6, **subplot_options) -> Iterator[tuple[Figure, list]]:
    """Yield a figure with a grid of axes (flattened, row-major) drawn in matplotlib's default style.

    The default style ignores the user's matplotlibrc, so the files depend only on the records.
    """
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, columns, squeeze=False, **subplot_options)
        yield fig, list(axes.flat)


@contextmanager
def figure_rows(columns: int, rows: int, width: float = 3.4, height: float = 2.6) -> Iterator[tuple[Figure, list[tuple[SubFigure, list]]]]:
    """Yield a figure of `rows` subfigures stacked vertically, each with one row of `columns` axes.

    Each subfigure can carry its own title and colour bar, which a plain grid of axes cannot.
    The style is matplotlib's default, as in `figure`.
    """
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
        FigureCanvasAgg(fig)
        subfigures = fig.subfigures(rows, 1, squeeze=False)[:, 0]
        yield fig, [(subfigure, list(subfigure.subplots(1, columns, squeeze=False).flat)) for subfigure in subfigures]


def fits_width(artist: Artist, fig: Figure | SubFigure) -> bool:
    """Return whether `artist` (a text or legend of `fig`) is no wider than `fig`."""
    renderer = fig.figure.canvas.get_renderer()
    # Text is measured at the figure's own resolution, but the files are saved at `DPI`. The 2% margin covers
    # the small difference in text width between the two.
    return artist.get_window_extent(renderer).width <= 0.98 * fig.bbox.width


def fit_suptitle(fig: Figure | SubFigure, text: str, **options) -> Text:
    """Set the suptitle of `fig`, each line wrapped at spaces so that the title fits the figure's width.

    Matplotlib draws a suptitle on one line and cuts off what does not fit, as in a one-panel figure.
    `options` go to `suptitle` (fontsize, for example). A single word wider than the figure stays whole.
    """
    title = fig.suptitle(text, **options)
    for columns in range(len(text), 0, -1):
        if fits_width(title, fig):
            break
        lines = [textwrap.fill(line, width=columns, break_long_words=False, break_on_hyphens=False) for line in text.splitlines()]
        title.set_text("\n".join(lines))
    return title


# A log axis gets at least this many labelled ticks within its data range (see label_log_axis).
MIN_LABELLED_TICKS = 3


def label_log_axis(axis: Axis) -> None:
    """Label at least MIN_LABELLED_TICKS ticks of a log axis within the range of the data plotted so far.

    Matplotlib labels the powers of ten, and on an axis spanning less than a decade some minor
    ticks too (LogFormatter's minor_thresholds). So data spanning less than two decades may get
    one or two labels and none near a cluster of points. Such data get ticks at 1, 2 and 5 times
    the powers of ten, or evenly spaced ticks when that is still too few, labelled as plain
    numbers with an SI suffix (150k, 2M). Call it after plotting.
    """
    data = axis.axes.dataLim
    low, high = (data.minposx, data.xmax) if axis.axis_name == "x" else (data.minposy, data.ymax)
    # With no positive value, or one value only, there is no range to put ticks in.
    if not (np.isfinite(low) and low < high):
        return
    powers = 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    candidates = (
        powers,
        np.outer(powers, (1.0, 2.0, 5.0)).ravel(),
        MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10], min_n_ticks=MIN_LABELLED_TICKS).tick_values(low, high),
    )
    for number, candidate in enumerate(candidates):
        # The relative margin keeps a tick computed as 99999.99999 for data starting at 1e5.
        ticks = [tick for tick in candidate if low * (1 - 1e-9) <= tick <= high * (1 + 1e-9)]
        if len(ticks) >= MIN_LABELLED_TICKS:
            break
    if number == 0:
        return  # matplotlib's own labels at the powers of ten suffice
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(_plain_formatter(ticks))
    axis.set_minor_formatter(NullFormatter())


def _plain_formatter(ticks: list[float]) -> Formatter:
    """Return a formatter that writes each tick as a number with an SI suffix, or with an offset when those repeat."""
    formatter = EngFormatter(sep="")
    # EngFormatter keeps 6 significant digits, too few for ticks less than about 1e-5 of their value apart.
    if len({formatter.format_eng(tick) for tick in ticks}) < len(ticks):
        return ScalarFormatter(useOffset=True)
    return formatter


def grid_shape(count: int, max_columns: int = 4) -> tuple[int, int]:
    """Return (columns, rows) of a near-square grid with at most `max_columns` columns for `count` panels."""
    columns = min(count, max_columns)
    return columns, -(-count // columns)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write `fig` as out_dir/<stem>.<format> for each format, each file atomically; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in formats:
        if kind not in METADATA:
            raise ValueError(f"figure format {kind!r} is not supported; use one of {', '.join(METADATA)}.")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=DPI, metadata=METADATA[kind])
        # A row name such as aioli[eta=0.5,ema=0.1] becomes a portable file name: aioli_eta=0.5_ema=0.1.
        portable = re.sub(r"[^A-Za-z0-9_.=-]", "_", stem.replace("]", ""))
        path = out_dir / f"{portable}.{kind}"
        _write_bytes_atomic(path, buffer.getvalue())
        written.append(path)
    return written


def _write_bytes_atomic(path: Path, payload: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def script_arguments(description: str) -> argparse.Namespace:
    """Parse the command line shared by the figure scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results-dir", default="results", help="results folder (default: results)")
    parser.add_argument("--experiment", default="sim", help="experiment folder under the results folder (default: sim)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: RESULTS_DIR/EXPERIMENT/figures)")
    parser.add_argument("--seed", type=int, default=None, help="seed whose runs are shown (default: the lowest recorded)")
    return parser.parse_args()


def run_script(build, description: str) -> None:
    """Run one figure script from the command line: build the figure, or log what is missing."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = script_arguments(description)
    try:
        paths = build(arguments.results_dir, arguments.experiment, out_dir=arguments.out_dir, seed=arguments.seed)
    except MissingInput as missing:
        log.info("skipped: %s", missing)
        return
    for path in paths:
        log.info("wrote %s", path)
