"""RegMix (Liu et al. 2024): regress losses on many small probe runs, then average the best of
many simulated mixtures."""

import numpy as np

from methods._probes import ProbingMethod, final_run_caps
from mixbench.errors import ConfigError
from mixbench.laws import get_law
from mixbench.method import MethodContext, Observation, register
from mixbench.simplex import dirichlet_around, regmix_prior

# Concentrations log-spaced in [0.1, 5], as RegMix samples them: np.geomspace(0.1, 5, 5).
DEFAULT_CONCENTRATIONS = (0.1, 0.266, 0.707, 1.88, 5.0)


@register
class RegMix(ProbingMethod):
    """Train `probes` short probe runs of a small model on mixtures drawn around the token
    distribution raised to `prior_temperature`, and fit one regression law per evaluation set.
    Then rank `n_samples` simulated mixtures from the same distribution by predicted mean loss,
    and train on the average of the `top_k` best.

    Probe and simulated mixtures come from Dirichlet(concentration * prior), with the concentration
    drawn from `concentrations` per sample; weights below `min_weight` are zeroed, and a mixture
    that would give some domain more than `max_epochs` passes in the final run is rejected.
    `law` is the regression law of `mixbench.laws` ("dml", "linear", "trees" or "lightgbm", with
    `law_params` its hyperparameters); it needs `law.min_runs(m)` probe runs. The default is the
    log-linear law, because a linear law is minimised at the edge of the simulated mixtures and
    trees need hundreds of runs (RegMix trained 512); conf/method/regmix.yaml gives measurements.
    """

    name = "regmix"

    def __init__(
        self,
        probes: int = 32,
        probe_steps: float | None = 0.25,
        probe_model="probe",
        law: str = "dml",
        law_params: dict | None = None,
        prior_temperature: float = 0.5,
        concentrations=DEFAULT_CONCENTRATIONS,
        min_weight: float = 2e-4,
        max_epochs: float | None = 15,
        n_samples: int = 100_000,
        top_k: int = 128,
    ):
        self.probes = probes
        self.probe_steps = probe_steps
        self.probe_model = probe_model
        self.law = law
        self.law_params = law_params
        self.prior_temperature = prior_temperature
        self.concentrations = concentrations
        self.min_weight = min_weight
        self.max_epochs = max_epochs
        self.n_samples = n_samples
        self.top_k = top_k

    def make_law(self, context: MethodContext):
        params = dict(self.law_params or {})
        if self.law in ("dml", "trees", "lightgbm"):
            params = {"seed": int(context.seed)} | params
        return get_law(self.law, **params)

    def check(self, context: MethodContext) -> None:
        super().check(context)
        law = self.make_law(context)
        needed = law.min_runs(context.m)
        if isinstance(self.probes, bool) or not isinstance(self.probes, int) or self.probes < needed:
            raise ConfigError(
                f"method regmix: probes={self.probes!r} is too few; the {self.law!r} law needs at least {needed} "
                f"probe runs for m={context.m} domains. Set method.probes={needed} or more, or pick a law "
                f"that needs fewer runs (law=linear needs m, law=dml m + 1)."
            )
        for name in ("n_samples", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method regmix: {name}={value!r} is invalid; give a whole number >= 1.")
        if self.top_k > self.n_samples:
            raise ConfigError(
                f"method regmix: top_k={self.top_k} exceeds n_samples={self.n_samples}; "
                f"average fewer mixtures or simulate more."
            )
        # One draw checks the prior temperature, the concentrations, min_weight and the caps.
        self.sample(context, 1, self.rng(context, stream=2))

    def sample(self, context: MethodContext, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw n mixtures from RegMix's distribution around the tempered token distribution."""
        prior = regmix_prior(context.train_tokens, float(self.prior_temperature))
        caps = final_run_caps(context, self.max_epochs, self.name)
        return dirichlet_around(prior, list(self.concentrations), n, rng, epoch_caps=caps, min_weight=float(self.min_weight))

    def probe_mixtures(self, context: MethodContext) -> np.ndarray:
        # NOTE: at low concentrations and few domains the draw repeats mixtures (a one-hot one, say).
        # A repeat has the same run spec, so the store trains it once and the regression is fitted on
        # copies of one run. The published runs would be separate trainings. Whether to redraw is open.
        return self.sample(context, self.probes, self.rng(context))

    def fit(self, observations: list[Observation], context: MethodContext) -> "RegMix":
        P, L = self.observed(observations, context)
        law = self.make_law(context)
        needed = law.min_runs(context.m)
        if len(P) < needed:
            raise ConfigError(
                f"method regmix got {len(P)} probe runs, but the {self.law!r} law needs at least {needed} "
                f"for m={context.m} domains; set method.probes={needed} or more."
            )
        if self.law == "dml":
            # The log-linear fit starts with each target's own domain weighted below the others.
            own = [context.domains.index(name) if name in context.domains else None for name in context.eval_sets]
            self.law_ = law.fit(P, L, own_domains=own)
        else:
            self.law_ = law.fit(P, L)
        self.mixture_, self.top_k_mean_loss_ = self.search(context)
        self.predicted_loss_ = self.law_.predict(self.mixture_[None, :])[0]
        self.fit_residual_ = float(np.sqrt(np.mean((self.law_.predict(P) - L) ** 2)))
        return self

    def search(self, context: MethodContext) -> tuple[np.ndarray, float]:
        """Return the mean of the top_k of n_samples simulated mixtures, and their mean predicted loss."""
        # A stream separate from the probes' draws, so that the simulated mixtures are new ones.
        rng = self.rng(context, stream=1)
        losses, samples = [], []
        for start in range(0, self.n_samples, 20_000):
            batch = self.sample(context, min(20_000, self.n_samples - start), rng)
            samples.append(batch)
            losses.append(self.law_.predict(batch).mean(axis=1))
        samples, losses = np.concatenate(samples), np.concatenate(losses)
        best = np.argsort(losses, kind="stable")[: self.top_k]
        mixture = samples[best].mean(axis=0)
        return mixture / mixture.sum(), float(losses[best].mean())

    def optimize(self, context: MethodContext) -> np.ndarray:
        if not hasattr(self, "mixture_"):
            raise ConfigError("method regmix is not fitted; call fit(observations, context) with its probe results first.")
        return self.mixture_.copy()
