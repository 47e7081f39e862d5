"""The explore-fit-optimize interface of every mixing method, and the method registry.

Each method is an estimator of the implicit matrix A of a linear mixing law:

- `explore(context)` returns the probe runs (static methods) or the exploration sub-rounds
  (online methods) that the method needs; the harness, not the method, executes and caches them;
- `fit(observations, context)` estimates the law from what exploration observed, stores it in
  attributes ending in `_`, and returns self;
- `optimize(context)` returns the next mixture.

As in scikit-learn, `__init__` only stores hyperparameters under their config names, so
`get_params()` can rebuild the method and the run store can hash it.
"""

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mixbench.backend import DOMAIN_GRADIENTS, KNOWN_REQUIREMENTS, REFERENCE_LOSS, StepHook
from mixbench.errors import ConfigError, unknown_name_error


@dataclass(frozen=True)
class MethodContext:
    """The facts a method may use about the setting before it trains anything.

    `train_tokens` is the number of training tokens per domain, in the order of `domains`.
    `steps_setting` is the setting that sets `total_steps`, for messages: train.steps, or
    sim.steps on the simulator.
    """

    domains: tuple[str, ...]
    eval_sets: tuple[str, ...]
    train_tokens: np.ndarray
    total_steps: int
    tokens_per_step: int
    seed: int = 0
    steps_setting: str = "train.steps"

    @property
    def m(self) -> int:
        return len(self.domains)


@dataclass(frozen=True)
class Probe:
    """One exploration request.

    For a static method it is a whole probe run, trained once and cached in the run store,
    optionally with a smaller model or fewer steps (`model` and `train` are overrides of the
    main run's settings, and `model` may also name a conf/model file, such as "probe"). For an online method it is a sub-round of `steps` training steps
    on the live model, followed by a validation pass.
    """

    mixture: np.ndarray
    steps: int | None = None
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    role: str = "probe"
    seed: int | None = None


@dataclass
class Observation:
    """The outcome of one probe: validation losses after it, and before it for sub-rounds."""

    mixture: np.ndarray
    losses: np.ndarray
    before: np.ndarray | None = None
    steps: int = 0
    run_id: str | None = None
    role: str = "probe"


class MixingMethod:
    """Base class of every mixing method. Subclasses set `name` and implement `optimize`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "static"
    # A method that cannot run without a setting of its own (e.g. `fixed` needs a mixture)
    # sets this so that "run every method" skips it unless it is configured.
    needs_configuration: ClassVar[bool] = False

    def check(self, context: MethodContext) -> None:
        """Raise ConfigError for settings that cannot work in `context`, before any training starts."""

    def explore(self, context: MethodContext) -> list[Probe]:
        """Return the probe runs this method needs before it can choose a mixture."""
        return []

    def fit(self, observations: list[Observation], context: MethodContext) -> "MixingMethod":
        """Estimate the method's law from `observations`; the default has nothing to fit."""
        return self

    def optimize(self, context: MethodContext) -> np.ndarray:
        """Return the mixture to train on next."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not implement optimize(self, context); every mixing method must "
            f"override it to return the mixture to train on next."
        )

    @classmethod
    def param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            name
            for name, parameter in signature.parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Return the hyperparameters, read back from the attributes `__init__` stored.

        Raise ConfigError when `__init__` did not store a setting under its own name.
        """
        params = {}
        for name in self.param_names():
            try:
                params[name] = getattr(self, name)
            except AttributeError:
                cls = type(self)
                stored = ", ".join(vars(self)) or "nothing"
                raise ConfigError(
                    f"method {cls.name!r} ({cls.__module__}.{cls.__qualname__}) has no attribute {name!r} after "
                    f"__init__, which stored: {stored}. Its __init__ must store each setting under its own name "
                    f"(self.{name} = {name}), so that get_params() can read the settings back."
                ) from None
        return params

    def run_params(self, context: MethodContext) -> dict[str, Any]:
        """Return the settings that identify this method: `get_params()`.

        An online method's run is keyed by them in the run store. A method that fills null
        settings from the context (the number of domains, say) returns the filled values, so a
        change in how they are filled trains a new run instead of reusing an old record.
        """
        return self.get_params()

    @classmethod
    def test_settings(cls, domains: tuple[str, ...]) -> dict[str, Any]:
        """Return the settings the conformance tests build the method with, for short runs on `domains`.

        The default, {}, keeps the config defaults. A method overrides it when a default cannot run
        on the tests' three domains, such as a setting that names a domain of the real corpus.
        """
        return {}

    def fitted_state(self) -> dict[str, Any]:
        """Return the learned attributes (names ending in `_`), for the run record."""
        return {key: value for key, value in vars(self).items() if key.endswith("_") and not key.startswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({params})"


class StaticMethod(MixingMethod):
    """A method that picks one mixture before the final training run."""

    kind = "static"


class OnlineMethod(MixingMethod):
    """A method that changes the mixture during training, in rounds of `round_steps` steps.

    Each round the harness runs `explore` sub-rounds on the live model (counted against the
    training budget), passes their observations to `fit`, trains the rest of the round on
    `optimize`'s mixture, and calls the `step_hook` (if any) once per training step.
    A proxy method (`trains_proxy = True`) learns weights in a proxy run; its final model is then
    retrained from scratch on `final_mixture`.
    """

    kind = "online"
    trains_proxy: ClassVar[bool] = False
    by_loss_weights: ClassVar[bool] = False
    # The statistics that a method acting as its own step hook requests from the backend
    # (REFERENCE_LOSS or DOMAIN_GRADIENTS). By default it requests none, so the hook receives per-domain training losses only.
    requires: ClassVar[frozenset[str]] = frozenset()

    @property
    def round_steps(self) -> int:
        """The number of training steps in each round."""
        raise NotImplementedError(
            f"{type(self).__qualname__} does not define round_steps; every online method must override it with "
            f"a property that returns the number of training steps in each round."
        )

    def initial_mixture(self, context: MethodContext) -> np.ndarray:
        return np.full(context.m, 1.0 / context.m)

    def step_hook(self, context: MethodContext) -> StepHook | None:
        """Return the per-step update the backend calls during training, or None."""
        return None

    def prerequisites(self, context: MethodContext) -> list[Probe]:
        """Return whole runs this method needs before its own run (a reference run, single-domain runs).

        They are trained once through the run store and shared with any method that needs the same
        run. A probe with role "reference" becomes the backend's reference model.
        """
        return []

    def use_prerequisites(self, observations: list[Observation], context: MethodContext) -> None:
        """Learn from the prerequisite runs' final validation losses (e.g. Skill-It's skills graph)."""

    def final_mixture(self, mean_mixture: np.ndarray, context: MethodContext) -> np.ndarray:
        """Return the mixture a proxy method hands to its retrain, given the proxy run's mixture
        averaged over every training step. The default returns that average."""
        return np.asarray(mean_mixture)


_REGISTRY: dict[str, type[MixingMethod]] = {}


def register(cls: type[MixingMethod]) -> type[MixingMethod]:
    """Add a method class to the registry under its `name`. Use as a class decorator.

    Raise ConfigError for a class that could only fail later: a name taken by another class, a
    required member not overridden, a setting named like a base-class member, an invalid `requires`.
    """
    if not (isinstance(cls, type) and issubclass(cls, MixingMethod)):
        raise ConfigError(f"{cls!r} is not a subclass of mixbench.method.MixingMethod and cannot be registered.")
    if not cls.name:
        raise ConfigError(f"{cls.__qualname__} has no `name`; set the class attribute `name = \"...\"`.")
    # The built-in methods register first, so that a clash names the class that came later.
    load_builtin_methods()
    existing = _REGISTRY.get(cls.name)
    # The same class defined again in its module (a notebook cell run twice) replaces the old one.
    # A class of another module may not take the name, even with the same class name.
    if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ConfigError(
            f"method name {cls.name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
            f"give {cls.__module__}.{cls.__qualname__} another name."
        )
    # A setting named round_steps also leaves round_steps not overridden, and its own error is the clearer one.
    _check_setting_names(cls)
    _check_overrides(cls)
    _check_requires(cls)
    _REGISTRY[cls.name] = cls
    return cls


# The members that a concrete method must override, with the base class that declares each.
_REQUIRED = {
    "optimize": (MixingMethod, "optimize(self, context), which returns the mixture to train on next"),
    "round_steps": (OnlineMethod, "round_steps, a property that returns the number of training steps in each round"),
}
_BASES = (MixingMethod, StaticMethod, OnlineMethod, object)


def _describe(cls: type) -> str:
    return f"method {cls.name!r} ({cls.__module__}.{cls.__qualname__})"


def _check_overrides(cls: type[MixingMethod]) -> None:
    """Raise ConfigError when `cls` inherits a required member unchanged, naming a near miss such as `optimise`."""
    missing = [name for name, (base, _) in _REQUIRED.items()
               if issubclass(cls, base) and inspect.getattr_static(cls, name) is vars(base)[name]]
    if not missing:
        return
    own = [name for klass in cls.__mro__ if klass not in _BASES for name in vars(klass) if not name.startswith("__")]
    parts = []
    for name in missing:
        part = _REQUIRED[name][1]
        close = difflib.get_close_matches(name, own, n=1, cutoff=0.75)
        if close:
            part += f" (the class defines {close[0]}: rename it to {name})"
        parts.append(part)
    pronoun = "them" if len(missing) > 1 else "it"
    raise ConfigError(f"{_describe(cls)} does not override {' and '.join(parts)}. Define {pronoun} in the class.")


def _check_setting_names(cls: type[MixingMethod]) -> None:
    """Raise ConfigError for a setting of `__init__` named like a member of the mixbench base classes.

    `__init__` could not store it under its own name: a property has no setter, and an instance
    attribute would hide the base class's method or change how mixbench runs the method.
    """
    for setting in cls.param_names():
        for base in (OnlineMethod, StaticMethod, MixingMethod):
            if not issubclass(cls, base) or setting not in vars(base) or setting.startswith("__"):
                continue
            member = vars(base)[setting]
            if isinstance(member, property):
                member_kind = "property"
            elif callable(member) or isinstance(member, (classmethod, staticmethod)):
                member_kind = "method"
            else:
                member_kind = "class attribute"
            advice = " (for example steps_per_round) and return it from round_steps" if setting == "round_steps" else ""
            raise ConfigError(
                f"{_describe(cls)} has a setting {setting!r}, which is the name of {base.__name__}'s {member_kind} {setting}, "
                f"so __init__ cannot store it as self.{setting}. Rename the setting in __init__ and in the method's "
                f"config file{advice}."
            )


def _check_requires(cls: type[MixingMethod]) -> None:
    """Raise ConfigError for an online method's `requires` that the backends cannot provide."""
    if not issubclass(cls, OnlineMethod):
        return
    requires = inspect.getattr_static(cls, "requires")
    if isinstance(requires, property):
        # A property is computed per instance, so the backend checks its value before the first step.
        return
    known = ", ".join(sorted(KNOWN_REQUIREMENTS))
    example = "requires = frozenset({DOMAIN_GRADIENTS}), with the name imported from mixbench.backend"
    if not isinstance(requires, (set, frozenset, tuple, list)) or not all(isinstance(item, str) for item in requires):
        raise ConfigError(
            f"{_describe(cls)} has requires={requires!r}; give a frozenset of the statistics its step hook needs "
            f"({known}), for example {example}, or frozenset() for none."
        )
    unknown = sorted(set(requires) - KNOWN_REQUIREMENTS)
    if unknown:
        raise ConfigError(f"{_describe(cls)} requires {', '.join(unknown)}, which no backend provides; the known statistics are {known}.")
    if {REFERENCE_LOSS, DOMAIN_GRADIENTS} <= set(requires):
        raise ConfigError(
            f"{_describe(cls)} requires both {REFERENCE_LOSS} and {DOMAIN_GRADIENTS}, which the backends do not "
            f"compute in the same step; request one of them."
        )


def unregister(name: str) -> None:
    """Remove a method from the registry (tests use this to clean up)."""
    _REGISTRY.pop(name, None)


def load_builtin_methods() -> None:
    """Import the `methods` package, whose modules register the built-in methods."""
    import methods  # noqa: F401  (importing registers)


def available_methods() -> list[str]:
    load_builtin_methods()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[MixingMethod]:
    load_builtin_methods()
    if name not in _REGISTRY:
        raise unknown_name_error(
            "method", name, _REGISTRY, ("Pick one of these (method=NAME for a run, experiment.methods=[...] for a benchmark), or register your own "
             "class; a class in your own module is found with plugins=[MODULE] (see docs/adding-a-method.md).")
        )
    return _REGISTRY[name]


def build_method(config: dict[str, Any]) -> MixingMethod:
    """Instantiate a method from its config: `name` plus hyperparameters under their own names."""
    config = dict(config)
    name = config.pop("name", None)
    if not name:
        raise ConfigError("the method config has no `name`; set method=NAME (for example method=stratified).")
    cls = get_method_class(name)
    accepted = cls.param_names()
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ConfigError(
            f"method {name!r} does not take the setting(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) if accepted else '(none)'}."
        )
    config = _checked_values(name, cls, config)
    try:
        method = cls(**config)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid settings for method {name!r}: {error}") from None
    except Exception as error:  # noqa: BLE001 - a user's class may raise anything; the benchmark must say which
        raise ConfigError(
            f"method {name!r} could not be built: {cls.__module__}.{cls.__qualname__}({config}) raised "
            f"{type(error).__name__}: {error}. Its __init__ should only store its settings under their names."
        ) from error
    # A setting stored under another name fails here, before anything trains.
    method.get_params()
    return method


def _checked_values(name: str, cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """Return `config` with whole numbers made floats where the default is a float (`eta=1` is 1.0).

    Raise ConfigError for nan or inf, and for a setting whose default is a number or a flag and
    whose value is not one: `method.eta=abc` would otherwise fail later in a comparison, with a
    message that names neither.
    """
    defaults = {key: parameter.default for key, parameter in inspect.signature(cls.__init__).parameters.items()}
    checked = dict(config)
    for key, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            # No setting means anything by nan or inf, whatever its default. A method that checks
            # only a range would accept nan, because every comparison with nan is false.
            raise ConfigError(f"method {name!r} got {key}={value!r}; give a finite value.")
        default = defaults.get(key, inspect.Parameter.empty)
        if value is None or default is None or default is inspect.Parameter.empty:
            continue
        if isinstance(default, bool):
            expected, valid = "true or false", isinstance(value, bool)
        elif isinstance(default, (int, float)):
            expected, valid = "a number", isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not valid:
            raise ConfigError(f"method {name!r} got {key}={value!r}; expected {expected} (default {default!r}).")
        if isinstance(default, float) and isinstance(value, int):
            checked[key] = float(value)
    return checked


MethodFactory = Callable[..., MixingMethod]
