"""Random search: probe mixtures drawn from a Dirichlet distribution, keep the best probe."""

import numpy as np

from methods._probes import BestProbeMethod
from mixbench.errors import ConfigError
from mixbench.method import MethodContext, register


@register
class RandomSearch(BestProbeMethod):
    """Train `probes` probe runs on mixtures drawn from the symmetric Dirichlet(concentration)
    and pick the probe with the lowest mean validation loss.

    A concentration of 1 draws uniformly on the simplex, smaller values give sparser mixtures
    and larger ones mixtures closer to uniform. The draws are seeded by the context's seed.
    """

    name = "random_search"

    def __init__(self, probes: int = 8, probe_steps: float | None = 0.5, probe_model="probe", concentration: float = 1.0):
        self.probes = probes
        self.probe_steps = probe_steps
        self.probe_model = probe_model
        self.concentration = concentration

    def check(self, context: MethodContext) -> None:
        super().check(context)
        if isinstance(self.probes, bool) or not isinstance(self.probes, int) or self.probes < 1:
            raise ConfigError(f"method random_search: probes={self.probes!r} is invalid; give a whole number >= 1, e.g. 8.")
        if isinstance(self.concentration, bool) or not isinstance(self.concentration, (int, float)) or not self.concentration > 0:
            raise ConfigError(
                f"method random_search: concentration={self.concentration!r} is invalid; give a positive number "
                f"(1 draws uniformly on the simplex)."
            )

    def probe_mixtures(self, context: MethodContext) -> np.ndarray:
        alpha = np.full(context.m, float(self.concentration))
        return self.rng(context).dirichlet(alpha, size=self.probes)
