"""Grid search: probe every point of a regular lattice on the simplex, keep the best probe."""

import itertools
import math

import numpy as np

from methods._probes import BestProbeMethod
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, register

MAX_DOMAINS = 3


def lattice(m: int, resolution: int) -> np.ndarray:
    """Return every mixture whose weights are multiples of 1/resolution, as a (k, m) array.

    There are C(resolution + m - 1, m - 1) of them, vertices included.
    """
    points = [
        counts + (resolution - sum(counts),)
        for counts in itertools.product(range(resolution + 1), repeat=m - 1)
        if sum(counts) <= resolution
    ]
    return np.array(points, dtype=np.float64) / resolution


def lattice_size(m: int, resolution: int) -> int:
    return math.comb(resolution + m - 1, m - 1)


@register
class Grid(BestProbeMethod):
    """Train one probe run per point of the lattice {p : p_j = n_j / resolution} and pick the
    probe with the lowest mean validation loss. Only for m <= 3 domains, because the lattice
    grows as resolution^(m-1).

    `probes` thins the lattice to that many points by farthest-point selection (vertices first);
    None keeps the whole lattice. With full-length probes of the main model (`probe_steps` and
    `probe_model` None) the final run has the same spec as the best probe and comes from the
    run store's cache.
    """

    name = "grid"

    def __init__(self, resolution: int = 4, probes: int | None = None, probe_steps: float | None = 0.5, probe_model="probe"):
        self.resolution = resolution
        self.probes = probes
        self.probe_steps = probe_steps
        self.probe_model = probe_model

    def check(self, context: MethodContext) -> None:
        super().check(context)
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 1:
            raise ConfigError(f"method grid: resolution={self.resolution!r} is invalid; give a whole number >= 1, e.g. 4.")
        if context.m > MAX_DOMAINS:
            raise ConfigError(
                f"method grid needs m <= {MAX_DOMAINS} domains, but this setting has m={context.m} "
                f"({', '.join(context.domains)}); a lattice of resolution {self.resolution} would need "
                f"{lattice_size(context.m, self.resolution)} probe runs. Use method=random_search "
                f"(or method=dml) instead."
            )
        full = lattice_size(context.m, self.resolution)
        if self.probes is not None and (isinstance(self.probes, bool) or not isinstance(self.probes, int) or not 1 <= self.probes <= full):
            raise ConfigError(
                f"method grid: probes={self.probes!r} is invalid; the lattice of resolution {self.resolution} "
                f"has {full} points, so give a whole number in [1, {full}], null for all of them, or raise the resolution."
            )

    def probe_mixtures(self, context: MethodContext) -> np.ndarray:
        points = lattice(context.m, self.resolution)
        if self.probes is None or self.probes == len(points):
            return points
        return points[_thin(points, self.probes)]


def _thin(points: np.ndarray, n: int) -> list[int]:
    """Return indices of n lattice points: the vertices, then repeatedly the point farthest from those chosen."""
    vertices = [int(i) for i in np.flatnonzero(points.max(axis=1) == 1.0)]
    chosen = vertices[:n]
    distance = np.full(len(points), np.inf)
    for index in chosen:
        distance = np.minimum(distance, np.linalg.norm(points - points[index], axis=1))
    while len(chosen) < n:
        index = int(np.argmax(distance))
        chosen.append(index)
        distance = np.minimum(distance, np.linalg.norm(points - points[index], axis=1))
    return sorted(chosen)
