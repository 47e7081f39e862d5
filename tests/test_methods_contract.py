"""The estimator contract, checked over every registered method."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from mixbench.errors import ConfigError
from mixbench.method import (
    MethodContext,
    MixingMethod,
    StaticMethod,
    available_methods,
    build_method,
    get_method_class,
    register,
    unregister,
)
from mixbench.commands import method_config

CONTEXT = MethodContext(
    domains=("a", "b", "c"),
    eval_sets=("a", "b", "c"),
    train_tokens=np.array([1000.0, 3000.0, 6000.0]),
    total_steps=100,
    tokens_per_step=256,
)
CONFIGURED = {"fixed": {"mixture": [0.2, 0.3, 0.5]}}


def contract_settings(name: str) -> dict:
    """Return the settings a method is built with here: its own `test_settings` on CONTEXT's domains, then CONFIGURED."""
    return {**get_method_class(name).test_settings(CONTEXT.domains), **CONFIGURED.get(name, {})}


@pytest.mark.parametrize("name", available_methods())
def test_init_only_stores_hyperparameters(name):
    method = build_method(method_config(name, contract_settings(name)))
    params = method.get_params()
    assert set(params) == set(type(method).param_names())
    # __init__ stores nothing learned, and nothing under another name.
    assert not [key for key in vars(method) if key.endswith("_")]
    assert set(vars(method)) == set(params)
    rebuilt = type(method)(**params)
    assert rebuilt.get_params() == params


@pytest.mark.parametrize("name", available_methods())
def test_static_methods_fit_returns_self_and_optimize_is_on_simplex(name):
    method = build_method(method_config(name, contract_settings(name)))
    if method.kind != "static" or method.explore(CONTEXT):
        pytest.skip("needs probe runs; covered by the simulator conformance test")
    assert method.fit([], CONTEXT) is method
    mixture = method.optimize(CONTEXT)
    assert mixture.shape == (3,)
    assert np.all(mixture >= 0)
    assert mixture.sum() == pytest.approx(1.0)


def test_natural_is_proportional_to_tokens():
    mixture = build_method({"name": "natural"}).optimize(CONTEXT)
    np.testing.assert_allclose(mixture, [0.1, 0.3, 0.6])


def test_fixed_accepts_mapping_and_rejects_bad_mixtures():
    method = build_method({"name": "fixed", "mixture": {"c": 1.0}})
    np.testing.assert_allclose(method.optimize(CONTEXT), [0, 0, 1])
    with pytest.raises(ConfigError, match="unknown domain"):
        build_method({"name": "fixed", "mixture": {"z": 1.0}}).check(CONTEXT)
    with pytest.raises(ConfigError, match="3 domains"):
        build_method({"name": "fixed", "mixture": [0.5, 0.5]}).check(CONTEXT)
    with pytest.raises(ConfigError, match="needs a mixture"):
        build_method({"name": "fixed"}).check(CONTEXT)
    normalized = build_method({"name": "fixed", "mixture": [2, 1, 1], "normalize": True}).optimize(CONTEXT)
    np.testing.assert_allclose(normalized, [0.5, 0.25, 0.25])


def test_unknown_method_lists_close_matches():
    with pytest.raises(ConfigError, match="Did you mean 'stratified'"):
        get_method_class("stratifed")


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(ConfigError, match="does not take the setting"):
        build_method({"name": "stratified", "eta": 1.0})


def test_registry_rejects_duplicates_and_wrong_base_class():
    class NotAMethod:
        name = "not_a_method"

    with pytest.raises(ConfigError, match="not a subclass"):
        register(NotAMethod)

    class Stratified(StaticMethod):
        name = "stratified"

    with pytest.raises(ConfigError, match="already registered"):
        register(Stratified)

    # The same module and class name as a built-in only in name: another module may not take it.
    twin = type("Natural", (StaticMethod,), {"name": "natural", "__module__": "my_plugin", "__qualname__": "Natural"})
    with pytest.raises(ConfigError, match=r"registered by methods\.natural\.Natural; give my_plugin\.Natural another name"):
        register(twin)
    assert get_method_class("natural").__module__ == "methods.natural"


def test_plugin_imported_before_builtins_is_the_one_rejected(tmp_path):
    # A plugin imported first must not displace the built-in method, nor be blamed on it.
    (tmp_path / "clash.py").write_text(
        "from mixbench.method import StaticMethod, register\n\n\n"
        "@register\nclass Natural(StaticMethod):\n    name = 'natural'\n"
    )
    code = (
        "import sys\nfrom mixbench.errors import ConfigError\n"
        "try:\n    import clash\nexcept ConfigError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "registered by methods.natural.Natural; give clash.Natural another name" in result.stdout


def test_method_whose_init_raises_is_named():
    @register
    class Broken(StaticMethod):
        name = "test_broken_init"

        def __init__(self):
            # Computes in __init__, against the contract, and fails while doing so.
            self.missing_attribute.append(1)

        def optimize(self, context):
            return np.full(context.m, 1.0 / context.m)

    try:
        with pytest.raises(ConfigError, match=r"method 'test_broken_init' could not be built: .*Broken\(\{\}\) raised AttributeError"):
            build_method({"name": "test_broken_init"})
    finally:
        unregister("test_broken_init")


def test_user_method_registers_and_unregisters():
    @register
    class Heavy(StaticMethod):
        name = "test_heavy_first"

        def __init__(self, weight: float = 0.5):
            self.weight = weight

        def optimize(self, context):
            rest = (1 - self.weight) / (context.m - 1)
            return np.array([self.weight] + [rest] * (context.m - 1))

    try:
        assert "test_heavy_first" in available_methods()
        mixture = build_method({"name": "test_heavy_first", "weight": 0.8}).optimize(CONTEXT)
        np.testing.assert_allclose(mixture, [0.8, 0.1, 0.1])
    finally:
        unregister("test_heavy_first")
    assert "test_heavy_first" not in available_methods()


def test_every_method_class_documents_itself():
    for name in available_methods():
        cls = get_method_class(name)
        assert issubclass(cls, MixingMethod)
        assert inspect.getdoc(cls), f"{name} has no docstring"
