"""Each online method once on the real Accelerate harness, with a tiny model and corpus."""

import time

import numpy as np
import pytest

from mixbench.commands import method_config
from mixbench.engine import run_method
from mixbench.runs import RunStore

# Settings that fit the 12-step tiny run (evaluation every 4 steps, 3 domains).
TINY_OVERRIDES = {
    "doremi": {},
    "doge": {"lr": 3e-3},
    "skill_it": {"update_steps": 4, "graph_steps_fraction": 0.5},
    "aioli": {"update_steps": 6, "lp_rounds": 1, "lp_steps": 1},
    "odm": {},
}


@pytest.mark.slow
def test_online_methods_on_harness(tiny_setting, tmp_path):
    store = RunStore(tmp_path)
    started = time.perf_counter()
    for name, overrides in TINY_OVERRIDES.items():
        result = run_method(method_config(name, overrides), tiny_setting, store, seed=0)
        final = result.final
        assert final["status"] == "complete", (name, final.get("error"))
        assert np.isfinite(final["test_losses"]).all(), name
        assert np.sum(final["final_mixture"]) == pytest.approx(1.0), name
        scored = next((run for run in result.extra if run.get("role") == "proxy"), final)
        assert [entry for entry in scored["rounds"] if entry["A"] is not None], name
    assert time.perf_counter() - started < 60
