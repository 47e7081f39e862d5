"""Tests of the simulated world: dynamics, closed-form law, optimum, gates and gradients."""

import numpy as np
import pytest

from mixbench.errors import ConfigError, MixtureError
from mixbench.sim import Prerequisite, SimBackend, SimWorld, make_world
from mixbench.sim.optimum import minimize_closed_form
from mixbench.sim.schedule import LRSchedule


@pytest.mark.parametrize(
    "settings",
    [{}, {"lr_schedule": "constant", "warmup_steps": 0}, {"warmup_steps": 20, "min_lr_ratio": 0.0}],
)
def test_step_integration_matches_closed_form(settings):
    world = make_world(5, seed=1, prerequisites=False)
    rng = np.random.default_rng(0)
    for mixture in [np.full(5, 0.2), np.eye(5)[2], *rng.dirichlet(np.ones(5), size=3)]:
        backend = SimBackend(world, 400, **settings)
        backend.train(150, mixture)
        backend.train(250, mixture)
        expected = world.static_loss(mixture, 400, gated=False, schedule=backend.schedule)
        np.testing.assert_allclose(backend.true_losses, expected, rtol=0, atol=1e-9)


def test_gated_static_loss_matches_backend():
    world = make_world(5, seed=0)
    assert world.has_gates
    mixture = np.array([0.3, 0.1, 0.2, 0.25, 0.15])
    backend = SimBackend(world, 300)
    backend.train(300, mixture)
    np.testing.assert_allclose(backend.true_losses, world.static_loss(mixture, 300), rtol=0, atol=1e-12)
    assert not np.allclose(backend.true_losses, world.static_loss(mixture, 300, gated=False))


def test_closed_form_is_log_linear_law():
    world = make_world(4, seed=2, prerequisites=False)
    p = np.array([0.1, 0.2, 0.3, 0.4])
    k = world.step_size * LRSchedule().scales(300).sum()
    span = world.initial_loss - world.floor
    expected = world.floor + span * np.exp(-k * (world.transfer @ p) / span)
    np.testing.assert_allclose(world.static_loss(p, 300, gated=False), expected, rtol=1e-12)
    assert world.progress(300) == pytest.approx(k)


@pytest.mark.parametrize("m", [3, 5, 8])
def test_default_optimum_is_clearly_non_uniform(m):
    world = make_world(m, seed=0)
    steps = 1000
    best = world.optimal_static_mixture(steps, gated=False)
    best_loss = world.optimal_static_loss(steps, gated=False)
    uniform_loss = world.static_loss(np.full(m, 1.0 / m), steps, gated=False).mean()

    assert np.all(best >= 0)
    assert best.sum() == pytest.approx(1.0)
    assert np.abs(best - 1.0 / m).sum() > 0.2
    assert uniform_loss - best_loss > 0.02
    assert world.static_loss(best, steps, gated=False).mean() == pytest.approx(best_loss)
    for vertex in np.eye(m):
        assert world.static_loss(vertex, steps, gated=False).mean() > best_loss + 0.02


def test_optimum_beats_random_mixtures():
    world = make_world(5, seed=3)
    best_loss = world.optimal_static_loss(1000, gated=False)
    candidates = np.random.default_rng(1).dirichlet(np.ones(5), size=2000)
    k = world.progress(1000)
    assert world.closed_form(candidates, k).mean(axis=1).min() >= best_loss - 1e-9


def test_optimum_is_deterministic():
    first = make_world(5, seed=4).optimal_static_mixture(500, gated=False)
    second = make_world(5, seed=4).optimal_static_mixture(500, gated=False)
    np.testing.assert_array_equal(first, second)


def test_transfer_shrinks_toward_floor():
    world = make_world(4, seed=0, prerequisites=False)
    halfway = world.floor + 0.5 * (world.initial_loss - world.floor)
    np.testing.assert_allclose(world.true_A(world.initial_loss), world.transfer)
    np.testing.assert_allclose(world.true_A(halfway), 0.5 * world.transfer)
    np.testing.assert_allclose(world.true_A(world.floor), 0.0)

    backend = SimBackend(world, 300)
    backend.train(300, np.full(4, 0.25))
    row_norms_before = np.abs(world.transfer).sum(axis=1)
    row_norms_after = np.abs(backend.ground_truth()["A"][0]).sum(axis=1)
    assert np.allclose(row_norms_before, row_norms_after)
    trained = np.abs(world.true_A(backend.true_losses)).sum(axis=1)
    assert np.all(trained < row_norms_before)


def test_losses_never_cross_floor():
    world = make_world(3, seed=5, prerequisites=False, step_size=1.0)
    for vertex in np.eye(3):
        losses = world.static_loss(vertex, 200)
        assert np.all(losses >= world.floor)


def test_make_world_structure():
    world = make_world(6, seed=0, prerequisites=False, asymmetry=0.3, interference=0.15)
    rates = world.rates
    diagonal = np.diag(rates)
    off_diagonal = rates[~np.eye(6, dtype=bool)]
    one_way = (rates > 0.3) & (rates.T == 0)

    assert np.all(diagonal > 0)
    assert diagonal.max() - diagonal.min() > 0.3
    assert one_way.sum() >= 1
    assert (off_diagonal < 0).sum() >= 1
    assert world.names == ("d0", "d1", "d2", "d3", "d4", "d5")


def test_make_world_is_deterministic():
    first, second = make_world(5, seed=7), make_world(5, seed=7)
    other = make_world(5, seed=8)
    np.testing.assert_array_equal(first.transfer, second.transfer)
    np.testing.assert_array_equal(first.initial_loss, second.initial_loss)
    assert first.prerequisites == second.prerequisites
    assert not np.array_equal(first.transfer, other.transfer)


def test_make_world_rejects_bad_settings():
    with pytest.raises(ConfigError):
        make_world(1)
    with pytest.raises(ConfigError):
        make_world(4, asymmetry=1.5)
    with pytest.raises(ConfigError):
        make_world(4, initial_loss=(2.0, 3.0), floor=(2.5, 3.5))
    with pytest.raises(ConfigError):
        make_world(3, names=["a", "a", "b"])


def test_world_rejects_inconsistent_arrays():
    with pytest.raises(ConfigError):
        SimWorld(initial_loss=[4.0, 5.0], floor=[2.0, 6.0], transfer=np.eye(2))
    with pytest.raises(ConfigError):
        SimWorld(initial_loss=[4.0, 5.0], floor=[2.0, 2.0], transfer=np.eye(3))
    with pytest.raises(ConfigError):
        SimWorld([4.0, 5.0], [2.0, 2.0], np.eye(2), prerequisites=(Prerequisite(0, 0, 3.0, 0.1),))


def test_static_loss_rejects_invalid_mixture():
    world = make_world(3, seed=0)
    with pytest.raises(MixtureError):
        world.static_loss([0.5, 0.5, 0.5], 100)


def test_gate_scales_transfer_until_prerequisite_learned():
    prerequisite = Prerequisite(domain=1, requires=0, threshold=3.0, width=0.05, floor=0.1)
    world = SimWorld([5.0, 5.0], [1.0, 1.0], [[1.0, 0.0], [0.5, 2.0]], prerequisites=(prerequisite,))
    untrained = world.true_A(np.array([5.0, 5.0]))
    learned = world.true_A(np.array([2.0, 5.0]))
    np.testing.assert_allclose(untrained[1], 0.1 * np.array([0.5, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(learned[1], [0.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(world.true_A(np.array([5.0, 5.0]), gated=False)[1], [0.5, 2.0])


def _gram(world, losses):
    gradients = world.domain_gradients(losses)
    return gradients @ gradients.T


def test_gradient_gram_reproduces_symmetric_transfer():
    transfer = np.array([[2.0, 0.8, 0.1], [0.2, 1.5, 0.3], [0.1, 0.5, 1.0]])
    world = SimWorld([5.0, 4.0, 6.0], [2.0, 1.5, 3.0], transfer)
    losses = np.array([4.0, 3.0, 5.0])
    a = world.true_A(losses)
    symmetric = 0.5 * (a + a.T)
    assert np.linalg.eigvalsh(symmetric).min() > 0
    np.testing.assert_allclose(_gram(world, losses), symmetric, atol=1e-12)


def test_gradient_gram_is_nearest_psd_when_indefinite():
    world = SimWorld([5.0, 5.0], [1.0, 1.0], [[0.5, -2.0], [-2.0, 0.5]])
    a = world.true_A(world.initial_loss)
    eigenvalues, eigenvectors = np.linalg.eigh(a)
    assert eigenvalues.min() < 0

    gram = _gram(world, world.initial_loss)
    projection = eigenvectors @ np.diag(np.clip(eigenvalues, 0, None)) @ eigenvectors.T
    np.testing.assert_allclose(gram, projection, atol=1e-12)
    assert np.linalg.eigvalsh(gram).min() > -1e-12
    distance = np.linalg.norm(gram - a)
    assert distance == pytest.approx(np.sqrt(np.sum(np.clip(eigenvalues, None, 0) ** 2)))


def test_default_world_gradient_gram_is_psd():
    world = make_world(6, seed=0)
    gram = _gram(world, world.initial_loss)
    np.testing.assert_allclose(gram, gram.T, atol=1e-12)
    assert np.linalg.eigvalsh(gram).min() > -1e-10


@pytest.mark.parametrize("m, seed", [(3, 1), (5, 5), (8, 0)])
def test_dynamic_schedule_beats_best_static(m, seed):
    world = make_world(m, seed=seed)
    steps = 1000
    static_loss = world.optimal_static_loss(steps)
    ungated_law_mixture = world.optimal_static_mixture(steps, gated=False)
    assert world.static_loss(ungated_law_mixture, steps).mean() >= static_loss

    # Train the foundational domains first, then the best fixed mixture for the remaining run.
    backend = SimBackend(world, steps)
    foundations = sorted({gate.requires for gate in world.prerequisites})
    first = np.zeros(m)
    first[foundations] = 1.0 / len(foundations)
    while world.gates(backend.true_losses).min() < 0.9:
        backend.train(10, first)
    assert backend.step < steps // 4
    remaining_progress = world.etas(steps)[backend.step :].sum()
    rest, _ = minimize_closed_form(world, remaining_progress, backend.true_losses)
    backend.train(steps - backend.step, rest)

    assert backend.true_losses.mean() < static_loss - 0.03


def test_schedule_warmup_then_cosine():
    schedule = LRSchedule(warmup_steps=4, min_lr_ratio=0.1)
    scales = schedule.scales(14)
    np.testing.assert_allclose(scales[:4], [0.25, 0.5, 0.75, 1.0])
    assert scales[4] == pytest.approx(1.0)
    assert scales[9] == pytest.approx(0.55)
    assert schedule.scale(14, 14) == pytest.approx(0.1)
    assert np.all(np.diff(scales[4:]) < 0)


def test_schedule_matches_harness():
    torch = pytest.importorskip("torch")
    assert torch is not None
    from mixbench.train.harness import warmup_cosine

    schedule = LRSchedule(warmup_steps=30, min_lr_ratio=0.1)
    expected = [warmup_cosine(step, 30, 300, 0.1) for step in range(300)]
    np.testing.assert_allclose(schedule.scales(300), expected, rtol=1e-12)


def test_schedule_rejects_bad_settings():
    with pytest.raises(ConfigError):
        LRSchedule(kind="linear")
    with pytest.raises(ConfigError):
        LRSchedule(min_lr_ratio=1.5)
    with pytest.raises(ConfigError):
        LRSchedule(warmup_steps=50).scales(10)
    with pytest.raises(ConfigError):
        LRSchedule().scales(0)
