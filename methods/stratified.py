"""Stratified sampling: the uniform mixture, the baseline every table compares against."""

import numpy as np

from mixbench.method import MethodContext, StaticMethod, register
from mixbench.simplex import uniform


@register
class Stratified(StaticMethod):
    """Train on every domain equally: p_j = 1/m. No law, no probe runs."""

    name = "stratified"

    def __init__(self):
        pass

    def optimize(self, context: MethodContext) -> np.ndarray:
        return uniform(context.m)
