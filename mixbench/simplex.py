"""Mixtures on the probability simplex: validation, projection and update steps.

A mixture over m domains is a vector p with p_j >= 0 and sum_j p_j = 1.
"""

import difflib
from collections.abc import Sequence

import numpy as np

from mixbench.errors import ConfigError, MixtureError, unknown_name_error

SUM_TOLERANCE = 1e-6


def validate_mixture(
    mixture: Sequence[float] | np.ndarray,
    domains: Sequence[str] | int,
    *,
    normalize: bool = False,
    name: str = "mixture",
    normalize_setting: str | None = None,
) -> np.ndarray:
    """Return `mixture` as a float64 array after checking that it lies on the simplex.

    `domains` is the list of domain names (used in messages) or just their count. With
    `normalize=True` a non-negative vector with a positive sum is rescaled to sum to 1; it is
    never rescaled silently. `normalize_setting` says how the caller turns that on (for
    example "method.normalize=true"); the message for weights that do not sum to 1 names it.
    """
    names = [f"domain {j}" for j in range(domains)] if isinstance(domains, int) else list(domains)
    try:
        p = np.asarray(mixture, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MixtureError(f"{name} {mixture!r} is not a list of numbers ({error}).") from None
    if p.ndim != 1 or p.shape[0] != len(names):
        raise MixtureError(
            f"{name} has {p.size} weights but there are {len(names)} domains ({', '.join(names)}); "
            f"give one weight per domain, in that order."
        )
    if not np.all(np.isfinite(p)):
        bad = [names[j] for j in np.flatnonzero(~np.isfinite(p))]
        raise MixtureError(
            f"{name} {p.tolist()} has a NaN or infinite weight for {', '.join(bad)}. Give every domain a finite "
            "weight >= 0, and 0 to leave it out."
        )
    if np.any(p < 0):
        bad = [f"{names[j]}={p[j]:g}" for j in np.flatnonzero(p < 0)]
        raise MixtureError(f"{name} has negative weights ({', '.join(bad)}); weights must be >= 0.")
    total = float(p.sum())
    if total <= 0:
        raise MixtureError(f"{name} {p.tolist()} has no positive weight. Give at least one domain a weight above 0.")
    if normalize:
        return p / total
    if abs(total - 1.0) > SUM_TOLERANCE:
        weights = ", ".join(f"{domain}={weight:g}" for domain, weight in zip(names, p))
        fix = f"or set {normalize_setting} to rescale them explicitly" if normalize_setting else "so that they sum to 1"
        raise MixtureError(f"{name} ({weights}) sums to {total:.9g}, not 1 (tolerance {SUM_TOLERANCE:g}). Fix the weights {fix}.")
    return p


def mixture_from_setting(
    value,
    domains: Sequence[str],
    *,
    name: str,
    normalize: bool = False,
    normalize_setting: str | None = None,
) -> np.ndarray:
    """Convert a configured mixture to a validated vector over `domains`.

    `value` is a list with one weight per domain, in the order of `domains`, or a mapping from
    domain name to weight in which domains left out get weight 0. Unknown domain names and
    weights that are not numbers raise MixtureError naming them. The rest is `validate_mixture`.
    """
    if hasattr(value, "items"):
        value = _weights_from_mapping(value, domains, name)
    elif isinstance(value, str) or not hasattr(value, "__iter__"):
        raise MixtureError(
            f"{name} {value!r} is not a list of numbers or a mapping {{domain: weight}}. Give "
            f"[w1,...] with one weight per domain ({', '.join(domains)}) or {{domain: weight}}."
        )
    else:
        value = list(value)
    bad = [weight for weight in value if isinstance(weight, bool)]
    if bad:
        raise MixtureError(f"{name} {value!r} contains {bad[0]!r}, which is not a number. Give numeric weights.")
    return validate_mixture(value, domains, normalize=normalize, name=name, normalize_setting=normalize_setting)


def _weights_from_mapping(weights, domains: Sequence[str], name: str) -> list[float]:
    # Keys are matched as text: YAML reads a domain named 2023 in {2023: 0.5} as a number.
    keys = [str(key) for key in weights]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise MixtureError(f"{name} names domain {repeated[0]!r} twice. Give each domain one weight.")
    weights = dict(zip(keys, weights.values()))
    unknown = [key for key in keys if key not in domains]
    if unknown:
        described = []
        for key in unknown:
            close = difflib.get_close_matches(key, domains, n=2, cutoff=0.5)
            hint = f" (did you mean {' or '.join(repr(match) for match in close)}?)" if close else ""
            described.append(f"{key!r}{hint}")
        raise MixtureError(
            f"{name} names unknown domain(s) {', '.join(described)}. The domains are "
            f"{', '.join(domains)}."
        )
    vector = []
    for domain in domains:
        weight = weights.get(domain, 0.0)
        try:
            number = float(weight)
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(weight, bool):
            raise MixtureError(
                f"{name} gives domain {domain!r} the weight {weight!r}, which is not a number. "
                "Give a number such as 0.5."
            )
        vector.append(number)
    return vector


def uniform(m: int) -> np.ndarray:
    """Return the uniform mixture over m domains."""
    return np.full(m, 1.0 / m)


def proportional(counts: Sequence[float]) -> np.ndarray:
    """Return the mixture proportional to non-negative `counts` (for example token counts)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or np.any(c < 0) or c.sum() <= 0:
        raise MixtureError(f"counts {c.tolist()} must be non-negative with a positive sum.")
    return c / c.sum()


# ---------------------------------------------------------------------------------------------
# Caps, projection and update steps
# ---------------------------------------------------------------------------------------------

RngLike = np.random.Generator | int | None

# Rows produced here sum to 1 within this tolerance and never exceed their caps.
EXACT_TOLERANCE = 1e-12


def as_rng(rng: RngLike) -> np.random.Generator:
    """Return `rng` as a numpy Generator; an int is a seed, None draws fresh entropy."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise ConfigError(f"rng {rng!r} is not a numpy Generator or an integer seed.")


def _as_vector(values, name: str, m: int | None = None) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MixtureError(f"{name} {values!r} is not a list of numbers ({error}).") from None
    if x.ndim != 1 or x.size == 0:
        raise MixtureError(f"{name} must be a non-empty 1-D list of numbers, got shape {x.shape}.")
    if m is not None and x.size != m:
        raise MixtureError(f"{name} has {x.size} entries but there are {m} domains; give one per domain.")
    if not np.all(np.isfinite(x)):
        raise MixtureError(f"{name} {x.tolist()} contains NaN or infinite values.")
    return x


def validate_caps(caps: Sequence[float] | np.ndarray | None, m: int, name: str = "caps") -> np.ndarray:
    """Return per-domain upper bounds on the weights as an array of length m (inf = no cap).

    Raise MixtureError when a cap is negative or NaN, or when the caps sum to less than 1,
    because then no mixture can respect them.
    """
    if caps is None:
        return np.full(m, np.inf)
    try:
        u = np.asarray(caps, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MixtureError(f"{name} {caps!r} is not a list of numbers ({error}).") from None
    if u.ndim != 1 or u.size != m:
        raise MixtureError(f"{name} has shape {u.shape} but there are {m} domains; give one cap per domain.")
    if np.any(np.isnan(u)):
        raise MixtureError(f"{name} {u.tolist()} contains NaN; use inf for a domain without a cap.")
    if np.any(u < 0):
        bad = [f"domain {j}={u[j]:g}" for j in np.flatnonzero(u < 0)]
        raise MixtureError(f"{name} has negative entries ({', '.join(bad)}); caps must be >= 0.")
    total = float(u.sum())
    if total < 1.0 - EXACT_TOLERANCE:
        raise MixtureError(
            f"{name} {u.tolist()} sum to {total:.6g} < 1, so no mixture can respect them. "
            f"Raise some caps (for epoch caps: allow more epochs or train on fewer tokens)."
        )
    return u


def _repair_rows(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Clip rows of x to [0, u] and spread each row's leftover sum so that it is exactly 1.

    A deficit is added in proportion to the room left below each cap, on positive weights
    only unless they lack the room, so zero weights stay zero. A surplus is removed in
    proportion to the weights. No bound is crossed.
    """
    x = np.clip(x, 0.0, u)
    residual = 1.0 - x.sum(axis=1, keepdims=True)
    room = np.where(np.isinf(u), 1.0, u - x)
    positive_room = np.where(x > 0, room, 0.0)
    enough = positive_room.sum(axis=1, keepdims=True) >= residual
    room = np.where(enough, positive_room, room)
    room_total = room.sum(axis=1, keepdims=True)
    x_total = x.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        add = np.where(residual > 0, residual * room / np.where(room_total > 0, room_total, 1.0), 0.0)
        remove = np.where(residual < 0, residual * x / np.where(x_total > 0, x_total, 1.0), 0.0)
    return np.clip(x + add + remove, 0.0, u)


def project_rows(X: Sequence | np.ndarray, caps: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Project every row of X onto the simplex {p : sum p = 1, 0 <= p <= caps} (Euclidean).

    Each projection is clip(x - tau, 0, caps), with tau found by bisection on the row's sum.
    Bisection runs on all rows at once, while `project` solves one vector exactly.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise MixtureError(f"rows to project must be a 2-D array with one column per domain, got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise MixtureError("rows to project contain NaN or infinite values.")
    u = validate_caps(caps, X.shape[1])
    low = X.min(axis=1, keepdims=True) - 1.0  # every coordinate is at its cap (or above 1)
    high = X.max(axis=1, keepdims=True)  # every coordinate is 0
    for _ in range(100):
        tau = 0.5 * (low + high)
        above = np.clip(X - tau, 0.0, u).sum(axis=1, keepdims=True) > 1.0
        low = np.where(above, tau, low)
        high = np.where(above, high, tau)
    return _repair_rows(np.clip(X - 0.5 * (low + high), 0.0, u), u)


def project(v: Sequence[float] | np.ndarray, caps: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Return the Euclidean projection of v onto {p : sum p = 1, 0 <= p_j <= caps_j}.

    The result is clip(v - tau, 0, caps) for the tau that makes it sum to 1. That sum is
    piecewise linear in tau with kinks at v_j and v_j - caps_j, so tau is found exactly
    between the two kinks around the crossing. Raise MixtureError when the caps are
    negative or sum to less than 1.
    """
    x = _as_vector(v, "vector to project")
    u = validate_caps(caps, x.size)
    finite = np.isfinite(u)
    kinks = np.unique(np.concatenate([x, x[finite] - u[finite]]))
    sums = np.clip(x[None, :] - kinks[:, None], 0.0, u).sum(axis=1)  # non-increasing in tau
    if sums[0] < 1.0:
        # The crossing lies left of every kink: capped domains sit at their caps and the
        # uncapped ones (there is at least one, else the caps would sum to less than 1)
        # are linear in tau.
        free = ~finite
        if free.any():
            tau = (x[free].sum() + u[finite].sum() - 1.0) / free.sum()
        else:
            tau = kinks[0]
    else:
        k = int(np.flatnonzero(sums >= 1.0)[-1])
        if k == kinks.size - 1 or sums[k] == sums[k + 1]:
            tau = kinks[k]
        else:
            tau = kinks[k] + (sums[k] - 1.0) * (kinks[k + 1] - kinks[k]) / (sums[k] - sums[k + 1])
    return _repair_rows(np.clip(x - tau, 0.0, u)[None, :], u)[0]


def eg_step(p: Sequence[float] | np.ndarray, gradient: Sequence[float] | np.ndarray, eta: float) -> np.ndarray:
    """Take one exponentiated-gradient step: p_j proportional to p_j * exp(eta * gradient_j).

    `gradient` is the per-domain benefit to climb (for example the column sums of A); pass
    the negative loss gradient to descend. The step is computed in log space, so large
    eta * gradient does not overflow, and a zero weight stays zero.
    """
    p = validate_mixture(p, len(np.atleast_1d(p)), name="p")
    g = _as_vector(gradient, "gradient", p.size)
    if not np.isfinite(eta):
        raise MixtureError(f"step size eta={eta!r} must be a finite number.")
    with np.errstate(divide="ignore"):
        logits = np.log(p) + eta * g
    logits -= logits[np.isfinite(logits)].max()
    q = np.exp(logits)
    return q / q.sum()


def smooth(p: Sequence[float] | np.ndarray, eps: float) -> np.ndarray:
    """Return (1 - eps) * p + eps / m, which keeps every weight at or above eps / m."""
    p = validate_mixture(p, len(np.atleast_1d(p)), name="p")
    if not 0.0 <= eps <= 1.0:
        raise MixtureError(f"smoothing eps={eps!r} must lie in [0, 1].")
    return (1.0 - eps) * p + eps / p.size


# ---------------------------------------------------------------------------------------------
# Sampling probe mixtures
# ---------------------------------------------------------------------------------------------


def _as_counts(token_counts, name: str = "token_counts") -> np.ndarray:
    c = _as_vector(token_counts, name)
    if np.any(c < 0) or c.sum() <= 0:
        raise MixtureError(f"{name} {c.tolist()} must be non-negative with a positive sum.")
    return c


def regmix_prior(token_counts: Sequence[float] | np.ndarray, temperature: float = 0.5) -> np.ndarray:
    """Return the mixture proportional to token_counts ** temperature.

    A temperature below 1 flattens the natural distribution towards uniform; RegMix samples
    its probe mixtures around the token distribution raised to the power 0.5.
    """
    c = _as_counts(token_counts)
    if not (np.isfinite(temperature) and temperature > 0):
        raise MixtureError(f"temperature={temperature!r} must be a positive number.")
    with np.errstate(divide="ignore"):
        weights = np.where(c > 0, np.exp(temperature * np.log(np.where(c > 0, c, 1.0))), 0.0)
    return weights / weights.sum()


def epoch_caps(
    token_counts: Sequence[float] | np.ndarray, total_tokens: float, max_epochs: float = 15.0
) -> np.ndarray:
    """Return the largest weight per domain that keeps it within `max_epochs` passes.

    A run of `total_tokens` tokens with weight p_j reads p_j * total_tokens tokens of domain j,
    so the cap is max_epochs * token_counts_j / total_tokens. RegMix rejects probe mixtures
    that would repeat a domain more than 15 times.
    """
    c = _as_counts(token_counts)
    if not (np.isfinite(total_tokens) and total_tokens > 0):
        raise MixtureError(f"total_tokens={total_tokens!r} must be a positive number of training tokens.")
    if not (np.isfinite(max_epochs) and max_epochs > 0):
        raise MixtureError(f"max_epochs={max_epochs!r} must be a positive number.")
    return validate_caps(max_epochs * c / total_tokens, c.size, name="epoch caps")


def dirichlet_around(
    prior: Sequence[float] | np.ndarray,
    concentration: float | Sequence[float],
    n: int,
    rng: RngLike,
    epoch_caps: Sequence[float] | np.ndarray | None = None,
    min_weight: float = 2e-4,
) -> np.ndarray:
    """Draw n mixtures from Dirichlet(concentration * prior), as RegMix samples its probes.

    `concentration` is one positive number, or several from which each sample draws one
    uniformly. RegMix uses values log-spaced in [0.1, 5], and small values give sparse mixtures.
    Weights below `min_weight` are set to 0 and each row is renormalised. Samples with any
    weight above `epoch_caps` (the maximum weight per domain, see `epoch_caps()`) are
    rejected and redrawn. Domains with prior weight 0 always get weight 0.
    """
    alpha_base = validate_mixture(prior, len(np.atleast_1d(prior)), name="prior")
    m = alpha_base.size
    levels = np.atleast_1d(np.asarray(concentration, dtype=np.float64))
    if levels.ndim != 1 or levels.size == 0 or not np.all(np.isfinite(levels) & (levels > 0)):
        raise MixtureError(f"concentration {concentration!r} must be a positive number or a list of them.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"number of samples n={n!r} must be a positive integer.")
    if not 0.0 <= min_weight < 1.0 / m:
        raise MixtureError(f"min_weight={min_weight!r} must lie in [0, 1/m) = [0, {1.0 / m:.3g}).")
    caps = validate_caps(epoch_caps, m, name="epoch_caps")
    generator = as_rng(rng)

    accepted: list[np.ndarray] = []
    count, drawn = 0, 0
    batch = max(2 * n, 256)
    while count < n:
        if drawn >= 200 * batch:
            raise MixtureError(
                f"only {count} of {n} Dirichlet samples respected the epoch caps after {drawn} draws; "
                f"raise the caps (allow more epochs), or sample closer to the prior with a larger concentration."
            )
        scale = generator.choice(levels, size=batch)
        samples = _draw(generator, alpha_base, scale)
        drawn += batch
        samples = np.where(samples < min_weight, 0.0, samples)
        totals = samples.sum(axis=1, keepdims=True)
        valid = np.isfinite(totals[:, 0]) & (totals[:, 0] > 0)
        samples = samples[valid] / totals[valid]
        samples = samples[np.all(samples <= caps + EXACT_TOLERANCE, axis=1)]
        accepted.append(samples)
        count += samples.shape[0]
    return _repair_rows(np.concatenate(accepted)[:n], caps)


def _draw(generator: np.random.Generator, prior: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Draw one Dirichlet sample per entry of `scale`, with alpha = scale_i * prior."""
    rows = np.zeros((scale.size, prior.size))
    support = prior > 0  # older numpy rejects alpha = 0, so zero-prior domains are left out
    for level in np.unique(scale):
        chosen = np.flatnonzero(scale == level)
        rows[np.ix_(chosen, np.flatnonzero(support))] = generator.dirichlet(level * prior[support], size=chosen.size)
    return rows


# ---------------------------------------------------------------------------------------------
# Space-filling probe designs
# ---------------------------------------------------------------------------------------------

DESIGN_KINDS = ("grid", "dirichlet", "cover")


def design(m: int, n: int, kind: str, rng: RngLike = None, setting: str | None = None) -> np.ndarray:
    """Return n probe mixtures over m domains as an (n, m) array.

    `setting` is the config key that chose `kind` (e.g. experiment.design), named in the errors
    when given.

    - "grid": a regular lattice (m <= 3). For m = 2 the points are evenly spaced; for m = 3
      the finest lattice {(i, j, k) / r} with at least n points is thinned to n points by
      farthest-point selection starting from the vertices.
    - "dirichlet": n independent draws, uniform on the simplex.
    - "cover": greedy maximin (farthest-point) selection from many uniform candidates. The m
      vertices come first (or n of them at random when n < m), so that every domain has a
      run dominated by it and the laws' per-domain coefficients are identifiable.
    """
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise ConfigError(f"a design needs at least 2 domains, got m={m!r}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"number of design points n={n!r} must be a positive integer.")
    if kind not in DESIGN_KINDS:
        raise unknown_name_error("design kind", str(kind), DESIGN_KINDS)
    generator = as_rng(rng)
    if kind == "grid":
        return _grid_design(m, n, setting)
    if kind == "dirichlet":
        return generator.dirichlet(np.ones(m), size=n)
    return _cover_design(m, n, generator)


def _grid_design(m: int, n: int, setting: str | None) -> np.ndarray:
    if m > 3:
        chosen, fix = "a grid design", "a cover or dirichlet design"
        if setting is not None:
            chosen, fix = f"{setting}=grid", f"{setting}=cover or {setting}=dirichlet"
        raise ConfigError(
            f"{chosen} is only available for m <= 3 domains (got m={m}), because a lattice on more "
            f"domains needs far too many runs; use {fix}."
        )
    if n == 1:
        return uniform(m)[None, :]
    if m == 2:
        first = np.linspace(0.0, 1.0, n)
        return np.column_stack([first, 1.0 - first])
    resolution = 1
    while (resolution + 1) * (resolution + 2) // 2 < n:
        resolution += 1
    lattice = np.array(
        [(i, j, resolution - i - j) for i in range(resolution + 1) for j in range(resolution + 1 - i)],
        dtype=np.float64,
    ) / resolution
    if lattice.shape[0] == n:
        return lattice
    vertices = [int(np.flatnonzero(np.all(lattice == np.eye(3)[j], axis=1))[0]) for j in range(3)]
    return lattice[_farthest_points(lattice, n, vertices[: min(n, 3)])]


def _cover_design(m: int, n: int, generator: np.random.Generator) -> np.ndarray:
    n_candidates = max(2048, 32 * n)
    candidates = np.vstack([np.eye(m), generator.dirichlet(np.ones(m), size=n_candidates)])
    start = list(range(m)) if n >= m else sorted(generator.choice(m, size=n, replace=False).tolist())
    return candidates[_farthest_points(candidates, n, start)]


def _farthest_points(points: np.ndarray, n: int, start: list[int]) -> list[int]:
    """Return indices of n points: `start`, then repeatedly the point farthest from those chosen."""
    chosen = list(start)
    distance = np.full(points.shape[0], np.inf)
    for index in chosen:
        distance = np.minimum(distance, np.linalg.norm(points - points[index], axis=1))
    while len(chosen) < n:
        index = int(np.argmax(distance))
        chosen.append(index)
        distance = np.minimum(distance, np.linalg.norm(points - points[index], axis=1))
    return chosen
