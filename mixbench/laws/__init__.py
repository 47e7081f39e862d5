"""Static and dynamic mixing laws: fit losses as a function of the mixture, predict, optimise.

    law = get_law("dml").fit(P, L)     # P (k, m) mixtures, L (k, n) losses
    law.predict(P_new)                 # (k_new, n) predicted losses
    law.optimize(caps=caps)            # mixture minimising the mean predicted loss
"""

from typing import Any

from mixbench.errors import unknown_name_error
from mixbench.laws.base import ROW_SUM_TOLERANCE, MixingLaw, check_losses, check_mixtures
from mixbench.laws.dynamic import DynamicLaw
from mixbench.laws.linear import LinearLaw
from mixbench.laws.loglinear import LogLinearLaw
from mixbench.laws.trees import LightGBMLaw, TreesLaw, import_lightgbm

LAWS: dict[str, type[MixingLaw]] = {
    law.name: law for law in (LogLinearLaw, LinearLaw, TreesLaw, LightGBMLaw, DynamicLaw)
}


def available_laws() -> list[str]:
    """Return the names that `get_law` accepts."""
    return sorted(LAWS)


def get_law(name: str, **params: Any) -> MixingLaw:
    """Return a new, unfitted law by registry name, with hyperparameters `params`.

    Raise ConfigError for an unknown name or hyperparameter, and for "lightgbm" when the
    optional lightgbm package is not installed.
    """
    if name not in LAWS:
        raise unknown_name_error("mixing law", str(name), LAWS)
    if name == "lightgbm":
        import_lightgbm()
    law_class = LAWS[name]
    try:
        return law_class(**params)
    except TypeError:
        known = sorted(law_class(**{}).get_params())
        unknown = sorted(set(params) - set(known))
        raise unknown_name_error(f"{name} hyperparameter", unknown[0] if unknown else "?", known) from None


__all__ = [
    "LAWS",
    "ROW_SUM_TOLERANCE",
    "DynamicLaw",
    "LightGBMLaw",
    "LinearLaw",
    "LogLinearLaw",
    "MixingLaw",
    "TreesLaw",
    "available_laws",
    "check_losses",
    "check_mixtures",
    "get_law",
]
