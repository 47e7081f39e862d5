"""Random simulated worlds with the structure measured transfer matrices show."""

from collections.abc import Sequence

import numpy as np

from mixbench.errors import ConfigError
from mixbench.sim.optimum import minimize_closed_form
from mixbench.sim.world import Prerequisite, SimWorld


# Length of the run that the default step_size is sized for.
_REFERENCE_STEPS = 1000


def _ungated(initial, floors, rates, step_size) -> SimWorld:
    return SimWorld(initial_loss=initial, floor=floors, transfer=rates * (initial - floors)[:, None], step_size=step_size)


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not low <= high:
        raise ConfigError(f"{name} must be a (low, high) pair with low <= high, got {bounds!r}.")


def _relative_rates(rng, m, asymmetry, interference, self_rate, transfer_rate, interference_rate, base_rate):
    """Draw R = A0 / (L0 - c): diagonal, one-way transfer, interference and weak shared transfer."""
    rates = np.zeros((m, m))
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    order = rng.permutation(len(pairs))
    n_one_way = min(len(pairs), int(np.ceil(asymmetry * len(pairs))))
    n_negative = min(len(pairs) - n_one_way, int(np.ceil(interference * len(pairs))))
    for rank, index in enumerate(order):
        # Randomly orient the pair: `source` is the training domain, `target` the evaluation set.
        source, target = pairs[index] if rng.random() < 0.5 else pairs[index][::-1]
        if rank < n_one_way:
            rates[target, source] = rng.uniform(*transfer_rate)
        elif rank < n_one_way + n_negative:
            rates[target, source] = -rng.uniform(*interference_rate)
            rates[source, target] = rng.uniform(*base_rate)
        else:
            rates[target, source] = rng.uniform(*base_rate)
            rates[source, target] = rng.uniform(*base_rate)
    rates[np.diag_indices(m)] = rng.uniform(*self_rate, size=m)
    return rates


def _prerequisites(rng, m, n_prerequisites, threshold, gate_floor, initial, floor, self_rates, importance):
    """Draw prerequisites without chains: each gated domain waits for one foundational domain.

    Foundational domains are drawn from the half of the domains that learn fastest from their
    own data, so that training on them first opens the gates quickly. The gated domains are the
    remaining ones with the largest `importance`, so that the gates change what is worth
    training. No foundational domain is gated itself, so the prerequisite graph has no cycles.
    """
    fast = np.argsort(-self_rates, kind="stable")[: max(1, m // 2)]
    n_prerequisites = min(n_prerequisites, m - 1)
    n_foundations = min(len(fast), max(1, n_prerequisites // 2))
    foundations = rng.choice(fast, size=n_foundations, replace=False)
    others = np.setdiff1d(np.arange(m), foundations)
    gated = others[np.argsort(-importance[others], kind="stable")[:n_prerequisites]]
    chosen = []
    for domain in gated:
        requires = int(rng.choice(foundations))
        span = initial[requires] - floor[requires]
        chosen.append(
            Prerequisite(
                domain=int(domain),
                requires=requires,
                threshold=float(floor[requires] + threshold * span),
                width=float(0.05 * span),
                floor=gate_floor,
            )
        )
    return tuple(sorted(chosen, key=lambda p: p.domain))


def make_world(
    m: int,
    seed: int = 0,
    *,
    prerequisites: bool = True,
    asymmetry: float = 0.3,
    interference: float = 0.15,
    names: Sequence[str] | None = None,
    initial_loss: tuple[float, float] = (4.0, 6.0),
    floor: tuple[float, float] = (1.5, 3.0),
    self_rate: tuple[float, float] = (0.3, 2.0),
    transfer_rate: tuple[float, float] = (0.5, 1.5),
    interference_rate: tuple[float, float] = (0.2, 0.6),
    base_rate: tuple[float, float] = (0.0, 0.1),
    n_prerequisites: int | None = None,
    threshold: float = 0.5,
    gate_floor: float = 0.1,
    step_size: float = 0.01,
) -> SimWorld:
    """Draw a world with m domains from `seed`.

    Rates are given relative to each domain's learnable range L0_i - c_i, as R = A0 / (L0 - c),
    so that a rate of 1 trained for progress k shrinks the excess loss by exp(-k).

    - `self_rate`: range of the diagonal of R, which makes some domains much faster to learn.
    - `asymmetry`: fraction of domain pairs (rounded up) where one domain helps the other with a
      rate drawn from `transfer_rate` and gets nothing back.
    - `interference`: fraction of pairs (rounded up) where one domain hurts the other with a
      rate drawn from `interference_rate`. The other direction gets a weak rate.
    - all remaining pairs transfer weakly both ways with rates drawn from `base_rate`.
    - with `prerequisites`, `n_prerequisites` domains (default max(1, m // 3)) each wait for
      another domain: their transfer is scaled by `gate_floor` until that domain has learned
      the fraction `threshold` of its learnable range. The prerequisite graph has no cycles.

    `step_size` (time per step at full learning rate) of 0.01 gives a progress k of about 5.5
    for a 1000-step run with the default schedule (10% warmup, cosine decay to 0.1). The losses
    of the default worlds then still depend strongly on the mixture. The gated domains are
    chosen with the best fixed mixture of such a run.
    """
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise ConfigError(f"m must be an integer >= 2, got {m!r}.")
    if not (0 <= asymmetry <= 1 and 0 <= interference <= 1):
        raise ConfigError(f"asymmetry and interference must be fractions in [0, 1], got {asymmetry!r}, {interference!r}.")
    if not (0 < threshold < 1 and 0 <= gate_floor <= 1):
        raise ConfigError(f"threshold must be in (0, 1) and gate_floor in [0, 1], got {threshold!r}, {gate_floor!r}.")
    ranges = dict(initial_loss=initial_loss, floor=floor, self_rate=self_rate, transfer_rate=transfer_rate,
                  interference_rate=interference_rate, base_rate=base_rate)
    for name, bounds in ranges.items():
        _check_range(name, bounds)
    if initial_loss[0] <= floor[1]:
        raise ConfigError(f"initial_loss {initial_loss!r} must lie entirely above floor {floor!r}.")
    if self_rate[0] <= 0:
        raise ConfigError(f"self_rate must be positive so that every domain learns from itself, got {self_rate!r}.")

    rng = np.random.default_rng(seed)
    initial = rng.uniform(*initial_loss, size=m)
    floors = rng.uniform(*floor, size=m)
    rates = _relative_rates(rng, m, asymmetry, interference, self_rate, transfer_rate, interference_rate, base_rate)
    gates = ()
    if prerequisites:
        count = max(1, m // 3) if n_prerequisites is None else n_prerequisites
        # Gate the domains that the best fixed mixture of the ungated world trains most.
        ungated = _ungated(initial, floors, rates, step_size)
        importance, _ = minimize_closed_form(ungated, ungated.progress(_REFERENCE_STEPS))
        gates = _prerequisites(rng, m, count, threshold, gate_floor, initial, floors, np.diag(rates), importance)
    return SimWorld(
        initial_loss=initial,
        floor=floors,
        transfer=rates * (initial - floors)[:, None],
        step_size=step_size,
        prerequisites=gates,
        names=tuple(names) if names is not None else None,
    )
