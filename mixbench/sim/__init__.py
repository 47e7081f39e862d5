"""A simulated TrainingBackend with a known ground-truth mixing law, for fast tests and study.

`make_world` draws a `SimWorld`: initial losses, floors, transfer matrix A0 and prerequisites.
`SimBackend` trains on it through the same protocol as the real harness. `a_sim` and `regret`
score a method's estimated law and final loss against the truth.
"""

from mixbench.sim.backend import SimBackend, SimSnapshot
from mixbench.sim.make import make_world
from mixbench.sim.metrics import a_sim, regret
from mixbench.sim.schedule import LRSchedule
from mixbench.sim.world import Prerequisite, SimWorld

__all__ = ["LRSchedule", "Prerequisite", "SimBackend", "SimSnapshot", "SimWorld", "a_sim", "make_world", "regret"]
