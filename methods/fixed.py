"""A mixture given in the config, for reproducing a published mixture or a hand-made one."""

import numpy as np

from mixbench.errors import ConfigError
from mixbench.method import MethodContext, StaticMethod, register
from mixbench.simplex import mixture_from_setting


# The command-line forms of this method's settings, for messages. A benchmark's default
# method_overrides have no entry for fixed, so the entry is added with a leading +.
WHERE = ("with mixbench run as method.mixture=[...] (and method.normalize=true to rescale weights that do not sum "
         "to 1), in a benchmark as '+experiment.method_overrides.fixed={mixture: [...]}' (and normalize: true)")


@register
class Fixed(StaticMethod):
    """Train on `mixture`: a list with one weight per domain, or a mapping from domain to weight.

    Weights must sum to 1 unless `normalize` is true. In a mapping, domains left out get weight 0.
    """

    name = "fixed"
    needs_configuration = True

    def __init__(self, mixture=None, normalize: bool = False):
        self.mixture = mixture
        self.normalize = normalize

    def check(self, context: MethodContext) -> None:
        self.resolve(context.domains)

    def optimize(self, context: MethodContext) -> np.ndarray:
        return self.resolve(context.domains)

    def run_params(self, context: MethodContext) -> dict:
        # A list and a {domain: weight} mapping of the same weights train one run, and so do weights
        # that normalize to them: all are the one mixture vector, already normalized.
        return {"mixture": self.resolve(context.domains).tolist(), "normalize": False}

    def resolve(self, domains: tuple[str, ...]) -> np.ndarray:
        """Return the configured mixture as a vector over `domains`, validated."""
        if self.mixture is None:
            raise ConfigError(
                f"method fixed needs a mixture: a list [w1,...] with one weight per domain ({', '.join(domains)}) or a "
                f"mapping {{domain: weight}}. Set it {WHERE}."
            )
        normalize_setting = f"fixed's normalize to true ({WHERE})"
        return mixture_from_setting(self.mixture, domains, name="fixed's mixture", normalize=bool(self.normalize),
                                    normalize_setting=normalize_setting)
