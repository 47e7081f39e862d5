"""Data Mixing Laws (Ye et al. 2024): fit a log-linear law per evaluation set on probe runs, then
train on the mixture that minimises the mean predicted loss."""

import numpy as np

from methods._probes import ProbingMethod, final_run_caps
from mixbench.errors import ConfigError
from mixbench.laws import get_law
from mixbench.method import MethodContext, Observation, register
from mixbench.simplex import DESIGN_KINDS, design


@register
class DataMixingLaws(ProbingMethod):
    """Probe a space-filling design, fit L_i(p) = c_i + exp(t_i . p) per evaluation set i with a
    Huber loss, and return the mixture minimising the mean of the fitted laws over the simplex.

    - `probes`: number of probe runs. None means 2m, about twice the m + 1 parameters per
      target, which leaves room for evaluation noise.
    - `design`: "cover" (the m vertices, then greedy maximin points), "dirichlet" (uniform
      draws) or "grid" (m <= 3).
    - `max_epochs`: the final mixture gives no domain more than this many passes over its
      training tokens in the final run (None: no cap).
    - `law_params`: hyperparameters of the "dml" law (e.g. huber_delta, the paper's 0.01 to 0.02).
    """

    name = "dml"

    def __init__(
        self,
        probes: int | None = None,
        design: str = "cover",
        probe_steps: float | None = 0.25,
        probe_model="probe",
        max_epochs: float | None = 15,
        law_params: dict | None = None,
    ):
        self.probes = probes
        self.design = design
        self.probe_steps = probe_steps
        self.probe_model = probe_model
        self.max_epochs = max_epochs
        self.law_params = law_params

    def make_law(self, context: MethodContext):
        params = {"seed": int(context.seed)} | dict(self.law_params or {})
        return get_law("dml", **params)

    def probe_count(self, context: MethodContext) -> int:
        return 2 * context.m if self.probes is None else self.probes

    def check(self, context: MethodContext) -> None:
        super().check(context)
        if self.design not in DESIGN_KINDS:
            raise ConfigError(f"method dml: design={self.design!r} is unknown; use one of {', '.join(DESIGN_KINDS)}.")
        if self.design == "grid" and context.m > 3:
            raise ConfigError(
                f"method dml: method.design=grid is only available for m <= 3 domains (this setting has m={context.m}), "
                f"because a lattice on more domains needs far too many runs; use method.design=cover or "
                f"method.design=dirichlet."
            )
        law = self.make_law(context)
        needed = law.min_runs(context.m)
        count = self.probe_count(context)
        if isinstance(count, bool) or not isinstance(count, int) or count < needed:
            raise ConfigError(
                f"method dml: probes={count!r} is too few; the log-linear law has {law.n_params(context.m)} "
                f"parameters per evaluation set, so it needs at least {needed} probe runs for m={context.m} "
                f"domains. Set method.probes={needed} or more (null means 2m = {2 * context.m})."
            )
        final_run_caps(context, self.max_epochs, self.name)

    def probe_mixtures(self, context: MethodContext) -> np.ndarray:
        return design(context.m, self.probe_count(context), self.design, rng=self.rng(context), setting="method.design")

    def fit(self, observations: list[Observation], context: MethodContext) -> "DataMixingLaws":
        P, L = self.observed(observations, context)
        law = self.make_law(context)
        needed = law.min_runs(context.m)
        if len(P) < needed:
            raise ConfigError(
                f"method dml got {len(P)} probe runs, but the log-linear law needs at least {needed} for "
                f"m={context.m} domains ({law.n_params(context.m)} parameters per evaluation set); "
                f"set method.probes={needed} or more."
            )
        # The law's fit starts with each target's own domain weighted below the others.
        own = [context.domains.index(name) if name in context.domains else None for name in context.eval_sets]
        self.law_ = law.fit(P, L, own_domains=own)
        self.c_, self.t_ = self.law_.c_, self.law_.t_
        self.caps_ = final_run_caps(context, self.max_epochs, self.name)
        self.mixture_ = self.law_.optimize(caps=self.caps_)
        self.predicted_loss_ = self.law_.predict(self.mixture_[None, :])[0]
        self.fit_residual_ = float(np.sqrt(np.mean((self.law_.predict(P) - L) ** 2)))
        return self

    def optimize(self, context: MethodContext) -> np.ndarray:
        if not hasattr(self, "mixture_"):
            raise ConfigError("method dml is not fitted; call fit(observations, context) with its probe results first.")
        return self.mixture_.copy()
