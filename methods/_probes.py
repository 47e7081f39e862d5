"""Shared machinery of the static methods that train probe runs before choosing a mixture.

Every such method takes the same probe settings under the same names:

- `probes`: how many probe runs to train;
- `probe_steps`: the length of a probe run as a fraction of the main run's steps (0.25 trains a
  quarter as many steps), or None for the full length;
- `probe_model`: overrides of the main model's settings for probe runs (a dict such as
  {d_model: 64, n_layer: 2}), the name of a file in conf/model (for example "probe"), or None
  to probe with the main model.

Probe mixtures are drawn from a generator seeded by the context's seed and the method's name,
so each seed of a benchmark draws different probes and two methods never share a stream.
"""

import zlib

import numpy as np

from mixbench.errors import ConfigError, MixtureError
from mixbench.method import MethodContext, Observation, Probe, StaticMethod
from mixbench.setting import MODEL_KEYS, model_file_settings
from mixbench.simplex import epoch_caps


class ProbingMethod(StaticMethod):
    """Base class of static methods that learn from whole probe runs (not registered itself).

    Subclasses store `probes`, `probe_steps` and `probe_model` in `__init__` and implement
    `probe_mixtures(context)`. This class turns those mixtures into `Probe`s and checks the
    observations that come back.
    """

    def probe_mixtures(self, context: MethodContext) -> np.ndarray:
        """Return the (k, m) mixtures to probe."""
        raise NotImplementedError

    def explore(self, context: MethodContext) -> list[Probe]:
        self.check(context)
        mixtures = np.asarray(self.probe_mixtures(context), dtype=np.float64)
        if mixtures.ndim != 2 or mixtures.shape[1] != context.m:
            raise ConfigError(
                f"method {self.name} produced probe mixtures of shape {mixtures.shape}, but there are "
                f"{context.m} domains ({', '.join(context.domains)}); each probe needs one weight per domain."
            )
        steps = probe_length(self.probe_steps, context, self.name)
        model = probe_model_overrides(self.probe_model, self.name)
        return [Probe(mixture=row, steps=steps, model=dict(model)) for row in mixtures]

    def check(self, context: MethodContext) -> None:
        probe_length(self.probe_steps, context, self.name)
        probe_model_overrides(self.probe_model, self.name)

    def rng(self, context: MethodContext, stream: int = 0) -> np.random.Generator:
        """Return the generator for this method at the context's seed; probe mixtures use stream 0."""
        return np.random.default_rng([int(context.seed), zlib.crc32(self.name.encode()), stream])

    def observed(self, observations: list[Observation], context: MethodContext) -> tuple[np.ndarray, np.ndarray]:
        """Return the probe mixtures P (k, m) and validation losses L (k, n), checked against `context`."""
        probes = [obs for obs in observations if obs.role == "probe"]
        if not probes:
            raise ConfigError(
                f"method {self.name} got no probe observations; run it through mixbench's engine "
                f"(run_method), which trains the probes that explore() returns."
            )
        n = len(context.eval_sets)
        for index, obs in enumerate(probes):
            mixture, losses = np.asarray(obs.mixture, dtype=np.float64), np.asarray(obs.losses, dtype=np.float64)
            if mixture.shape != (context.m,):
                raise ConfigError(
                    f"probe {index} of method {self.name} has the mixture {mixture.tolist()} with {mixture.size} "
                    f"weights, but there are {context.m} domains ({', '.join(context.domains)}); "
                    f"give one weight per domain, in that order."
                )
            if losses.shape != (n,) or not np.all(np.isfinite(losses)):
                raise ConfigError(
                    f"probe {index} of method {self.name} has the losses {losses.tolist()}, but {n} finite "
                    f"losses are expected, one per evaluation set ({', '.join(context.eval_sets)})."
                )
        P = np.stack([np.asarray(obs.mixture, dtype=np.float64) for obs in probes])
        L = np.stack([np.asarray(obs.losses, dtype=np.float64) for obs in probes])
        return P, L


class BestProbeMethod(ProbingMethod):
    """A probing method without a law: the final mixture is the probe with the lowest mean loss."""

    def fit(self, observations: list[Observation], context: MethodContext) -> "BestProbeMethod":
        P, L = self.observed(observations, context)
        index, mean = best_probe(P, L)
        self.probe_mixtures_, self.probe_mean_loss_ = P, mean
        self.best_index_, self.best_mixture_ = index, P[index]
        return self

    def optimize(self, context: MethodContext) -> np.ndarray:
        if not hasattr(self, "best_mixture_"):
            raise ConfigError(f"method {self.name} is not fitted; call fit(observations, context) with its probe results first.")
        return self.best_mixture_.copy()


def probe_length(fraction, context: MethodContext, method: str) -> int | None:
    """Return the number of steps of a probe run, or None when probes train the full length."""
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(
            f"method {method}: probe_steps={fraction!r} is invalid; give a fraction of the main run's steps "
            f"in (0, 1], e.g. 0.25, or null for full-length probe runs."
        )
    return max(1, int(round(float(fraction) * context.total_steps)))


def probe_model_overrides(probe_model, method: str) -> dict:
    """Return the model settings that probe runs override: {} for the main model."""
    if probe_model is None:
        return {}
    if isinstance(probe_model, str):
        try:
            return model_file_settings(probe_model)
        except ConfigError as error:
            raise ConfigError(f"method {method}: probe_model={probe_model!r} is invalid: {error} Or give a dict of "
                              f"model settings, or null for the main model.") from None
    if hasattr(probe_model, "items"):
        unknown = [str(key) for key in probe_model if key not in MODEL_KEYS]
        if unknown:
            raise ConfigError(f"method {method}: probe_model sets {', '.join(unknown)}, which is not a model setting; "
                              f"the settings are {', '.join(MODEL_KEYS)}.")
        return dict(probe_model)
    raise ConfigError(
        f"method {method}: probe_model={probe_model!r} is invalid; give a dict of model settings "
        f"(e.g. {{d_model: 64, n_layer: 2}}), the name of a conf/model file, or null for the main model."
    )


def final_run_caps(context: MethodContext, max_epochs, method: str) -> np.ndarray:
    """Return the per-domain weight caps that keep the final run within `max_epochs` passes.

    None means no cap. Raise ConfigError, with the smallest max_epochs that works, when the caps
    sum to less than 1 and so leave no mixture on the simplex.
    """
    m = context.m
    if max_epochs is None:
        return np.full(m, np.inf)
    total = float(context.total_steps) * float(context.tokens_per_step)
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, (int, float)) or not max_epochs > 0:
        raise ConfigError(f"method {method}: max_epochs={max_epochs!r} is invalid; give a positive number or null for no cap.")
    try:
        return epoch_caps(context.train_tokens, total, float(max_epochs))
    except MixtureError as error:
        needed = total / float(np.sum(context.train_tokens))
        raise ConfigError(
            f"method {method}: max_epochs={max_epochs} leaves no valid mixture, because the final run reads "
            f"{total:.4g} tokens and the domains hold {float(np.sum(context.train_tokens)):.4g} ({error}). "
            f"Set method.max_epochs to at least {needed:.3g}, or null for no cap."
        ) from None


def best_probe(P: np.ndarray, L: np.ndarray) -> tuple[int, np.ndarray]:
    """Return the index of the probe with the lowest mean loss, and every probe's mean loss."""
    mean = L.mean(axis=1)
    return int(np.argmin(mean)), mean
