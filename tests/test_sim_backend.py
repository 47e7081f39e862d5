"""Tests of SimBackend as a TrainingBackend: hooks, accounting, noise, state and errors."""

import numpy as np
import pytest

from mixbench.backend import DOMAIN_GRADIENTS, REFERENCE_LOSS, TrainingBackend
from mixbench.errors import ConfigError, MixtureError
from mixbench.sim import SimBackend, make_world
from mixbench.sim.backend import largest_remainder


class RecordingHook:
    """Step hook that records its calls and switches to `switch_to` at the first call."""

    def __init__(self, switch_to=None, requires=frozenset()):
        self.requires = frozenset(requires)
        self.switch_to = switch_to
        self.calls = []

    def update(self, stats, mixture):
        self.calls.append((stats, mixture.copy()))
        return self.switch_to


def _backend(m=4, total_steps=200, **kwargs):
    return SimBackend(make_world(m, seed=0), total_steps, **kwargs)


def test_implements_training_backend():
    backend = _backend()
    assert isinstance(backend, TrainingBackend)
    assert backend.domains == ("d0", "d1", "d2", "d3")
    assert backend.eval_sets == backend.domains
    assert backend.step == 0


def test_names_come_from_world():
    world = make_world(3, seed=0, names=["web", "code", "books"])
    backend = SimBackend(world, 10)
    assert backend.domains == ("web", "code", "books")


def test_hook_called_once_per_step():
    backend = _backend()
    hook = RecordingHook()
    result = backend.train(7, np.full(4, 0.25), hook=hook)
    assert len(hook.calls) == 7
    assert [stats.step for stats, _ in hook.calls] == list(range(7))
    assert result.steps == 7
    assert len(result.mixtures) == 7


def test_hook_mixture_applies_from_next_batch():
    backend = _backend()
    new = np.array([0.7, 0.1, 0.1, 0.1])
    hook = RecordingHook(switch_to=new)
    result = backend.train(3, np.full(4, 0.25), hook=hook)
    np.testing.assert_array_equal(hook.calls[0][0].tokens, [1024] * 4)
    np.testing.assert_allclose(hook.calls[0][1], 0.25)
    np.testing.assert_allclose(hook.calls[1][1], new)
    np.testing.assert_array_equal(hook.calls[1][0].tokens, largest_remainder(new, 4096))
    np.testing.assert_allclose(result.mixtures[0], new)

    expected = _backend()
    expected.train(1, np.full(4, 0.25))
    expected.train(2, new)
    np.testing.assert_allclose(backend.true_losses, expected.true_losses, atol=1e-12)


def test_hook_mixture_weights_same_step_by_loss_weights():
    backend = _backend()
    new = np.array([0.7, 0.1, 0.1, 0.1])
    hook = RecordingHook(switch_to=new)
    result = backend.train(2, np.full(4, 0.25), by_loss_weights=True, hook=hook)
    np.testing.assert_allclose(result.mixtures[0], new)
    np.testing.assert_array_equal(hook.calls[0][0].tokens, [1024] * 4)
    np.testing.assert_array_equal(result.tokens, [2048] * 4)

    expected = _backend()
    expected.train(2, new)
    np.testing.assert_allclose(backend.true_losses, expected.true_losses, atol=1e-12)


def test_hook_invalid_mixture_raises():
    backend = _backend()
    with pytest.raises(MixtureError):
        backend.train(2, np.full(4, 0.25), hook=RecordingHook(switch_to=np.array([0.5, 0.5, 0.5, 0.0])))


@pytest.mark.parametrize(
    "mixture",
    [[0.5, 0.5, 0.5, 0.0], [1.2, -0.2, 0.0, 0.0], [0.5, 0.5], [np.nan, 0.5, 0.5, 0.0]],
)
def test_invalid_mixture_raises(mixture):
    backend = _backend()
    with pytest.raises(MixtureError):
        backend.train(1, mixture)
    assert backend.step == 0


def test_invalid_arguments_raise():
    backend = _backend(total_steps=10)
    with pytest.raises(ConfigError):
        backend.train(11, np.full(4, 0.25))
    with pytest.raises(ConfigError):
        backend.train(-1, np.full(4, 0.25))
    with pytest.raises(ConfigError):
        backend.train(1, np.full(4, 0.25), purpose="warmup")
    with pytest.raises(ConfigError):
        backend.evaluate("train")
    with pytest.raises(ConfigError):
        backend.train(1, np.full(4, 0.25), hook=RecordingHook(requires={"hessian"}))
    with pytest.raises(ConfigError):
        _backend(sampling="stratified")
    with pytest.raises(ConfigError):
        _backend(total_steps=10, warmup_steps=20)
    with pytest.raises(ConfigError):
        _backend(lr_schedule="linear")


def test_token_accounting_by_purpose():
    backend = _backend(tokens_per_step=1000, eval_tokens_per_set=500)
    backend.train(5, np.full(4, 0.25))
    backend.train(3, np.full(4, 0.25), purpose="exploration")
    backend.evaluate()
    backend.evaluate("test")
    assert backend.compute.train_tokens == 5000
    assert backend.compute.exploration_tokens == 3000
    assert backend.compute.eval_tokens == 2 * 4 * 500
    assert backend.compute.reference_tokens == 0
    assert backend.compute.flops == 0.0
    assert backend.step == 8


def test_batch_tokens_follow_mixture():
    backend = _backend(tokens_per_step=1000)
    result = backend.train(4, [0.5, 0.3, 0.2, 0.0])
    np.testing.assert_array_equal(result.tokens, [2000, 1200, 800, 0])
    assert np.isnan(result.train_loss[3])
    assert np.all(np.isfinite(result.train_loss[:3]))


def test_largest_remainder_sums_to_total():
    counts = largest_remainder(np.array([1 / 3, 1 / 3, 1 / 3]), 100)
    assert counts.sum() == 100
    assert counts.tolist() == [34, 33, 33]


def test_largest_remainder_matches_harness_sampler():
    from mixbench.train.sampler import domain_counts

    rng = np.random.default_rng(0)
    mixtures = [np.full(3, 1 / 3), np.array([0.5, 0.25, 0.25]), *rng.dirichlet(np.ones(5), size=20)]
    for mixture in mixtures:
        expected = domain_counts(mixture, 97, "largest_remainder", rng)
        np.testing.assert_array_equal(largest_remainder(mixture, 97), expected)


def test_multinomial_tokens_average_to_mixture():
    backend = _backend(total_steps=400, sampling="multinomial", tokens_per_step=1000)
    mixture = np.array([0.4, 0.3, 0.2, 0.1])
    result = backend.train(400, mixture)
    np.testing.assert_allclose(result.tokens / result.tokens.sum(), mixture, atol=0.005)


def test_train_loss_is_loss_before_step():
    backend = _backend()
    hook = RecordingHook()
    backend.train(1, np.full(4, 0.25), hook=hook)
    np.testing.assert_allclose(hook.calls[0][0].train_loss, backend.world.initial_loss)


def test_eval_noise_has_configured_std():
    backend = _backend(eval_noise=0.2, seed=3)
    samples = np.array([backend.evaluate() for _ in range(4000)]) - backend.true_losses
    assert np.abs(samples.mean(axis=0)).max() < 4 * 0.2 / np.sqrt(4000)
    np.testing.assert_allclose(samples.std(axis=0), 0.2, rtol=0.05)


def test_train_noise_has_configured_std():
    world = make_world(4, seed=0)
    backend = SimBackend(world, 3000, train_noise=0.1, seed=3, lr_schedule="constant", warmup_steps=0)
    hook = RecordingHook()
    # One step per call, so that each reported loss can be compared with the true loss before it.
    deviations = []
    for _ in range(2000):
        before = backend.true_losses
        backend.train(1, np.full(4, 0.25), hook=hook)
        deviations.append(hook.calls[-1][0].train_loss - before)
    deviations = np.array(deviations)
    np.testing.assert_allclose(deviations.std(axis=0), 0.1, rtol=0.05)
    assert np.abs(deviations.mean(axis=0)).max() < 4 * 0.1 / np.sqrt(2000)


def _noisy_run(seed):
    backend = _backend(eval_noise=0.1, train_noise=0.1, seed=seed, sampling="multinomial")
    result = backend.train(50, [0.4, 0.3, 0.2, 0.1])
    return result, backend.evaluate(), backend.true_losses


def test_same_seed_gives_same_run():
    first, second, other = _noisy_run(11), _noisy_run(11), _noisy_run(12)
    np.testing.assert_array_equal(first[0].tokens, second[0].tokens)
    np.testing.assert_array_equal(first[0].train_loss, second[0].train_loss)
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[2], second[2])
    assert not np.array_equal(first[1], other[1])


def test_snapshot_restore_continues_identically():
    backend = _backend(eval_noise=0.1, train_noise=0.1, seed=5, sampling="multinomial", reference_mixture=np.full(4, 0.25))
    backend.train(20, [0.4, 0.3, 0.2, 0.1])
    snapshot = backend.snapshot()
    compute_before = backend.compute.as_dict()

    def continuation():
        hook = RecordingHook(requires={REFERENCE_LOSS})
        result = backend.train(30, [0.1, 0.2, 0.3, 0.4], hook=hook)
        return result, backend.evaluate(), backend.true_losses, [stats.excess_loss for stats, _ in hook.calls]

    first = continuation()
    after_first = (backend.step, backend.compute.as_dict(), backend.trajectory)
    backend.restore(snapshot)
    assert backend.step == 20
    assert backend.compute.as_dict() == compute_before
    assert len(backend.trajectory) == 20
    second = continuation()

    np.testing.assert_array_equal(first[0].tokens, second[0].tokens)
    np.testing.assert_array_equal(first[0].train_loss, second[0].train_loss)
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[2], second[2])
    np.testing.assert_array_equal(np.array(first[3]), np.array(second[3]))
    assert after_first[0] == backend.step
    assert after_first[1] == backend.compute.as_dict()
    np.testing.assert_array_equal(after_first[2], backend.trajectory)


def test_restore_rejects_foreign_snapshot():
    backend = _backend()
    with pytest.raises(ConfigError):
        backend.restore({"step": 3})
    with pytest.raises(ConfigError):
        backend.restore(_backend(m=3).snapshot())


def test_excess_loss_against_final_reference():
    world = make_world(4, seed=0)
    reference = np.full(4, 0.25)
    backend = SimBackend(world, 100, reference_mixture=reference, tokens_per_step=1000)
    hook = RecordingHook(requires={REFERENCE_LOSS})
    backend.train(3, [0.5, 0.5, 0.0, 0.0], hook=hook)
    final_reference = world.static_loss(reference, 100)
    first = hook.calls[0][0]
    np.testing.assert_allclose(first.excess_loss[:2], np.maximum(world.initial_loss[:2] - final_reference[:2], 0))
    assert np.all(np.isnan(first.excess_loss[2:]))
    assert backend.compute.reference_tokens == 3000


def test_excess_loss_against_lockstep_reference():
    backend = _backend()
    backend.train(10, np.full(4, 0.25))
    backend.set_reference(np.full(4, 0.25), mode="lockstep")
    hook = RecordingHook(requires={REFERENCE_LOSS})
    backend.train(5, np.full(4, 0.25), hook=hook)
    for stats, _ in hook.calls:
        np.testing.assert_allclose(stats.excess_loss, 0.0, atol=1e-12)


def test_reference_required_for_excess_loss():
    backend = _backend()
    with pytest.raises(ConfigError, match="reference"):
        backend.train(1, np.full(4, 0.25), hook=RecordingHook(requires={REFERENCE_LOSS}))


def test_domain_gradients_reproduce_true_transfer():
    world = make_world(4, seed=0)
    backend = SimBackend(world, 100)
    backend.train(10, np.full(4, 0.25))
    hook = RecordingHook(requires={DOMAIN_GRADIENTS})
    losses = backend.true_losses
    backend.train(1, np.full(4, 0.25), hook=hook)
    stats = hook.calls[0][0]
    a = world.true_A(losses)
    symmetric = 0.5 * (a + a.T)
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    psd = eigenvectors @ np.diag(np.clip(eigenvalues, 0, None)) @ eigenvectors.T
    np.testing.assert_allclose(stats.gradient_gram, psd, atol=1e-12)
    np.testing.assert_allclose(stats.target_alignment, stats.gradient_gram.mean(axis=1))
    assert stats.excess_loss is None


def test_statistics_only_when_requested():
    backend = _backend()
    hook = RecordingHook()
    backend.train(1, np.full(4, 0.25), hook=hook)
    stats = hook.calls[0][0]
    assert stats.excess_loss is None
    assert stats.gradient_gram is None
    assert stats.target_alignment is None


def test_ground_truth_records_rounds():
    world = make_world(4, seed=0)
    backend = SimBackend(world, 100)
    backend.train(10, np.full(4, 0.25))
    backend.train(5, np.eye(4)[0], purpose="exploration")
    backend.train(0, np.full(4, 0.25))
    truth = backend.ground_truth()
    assert truth["round_steps"] == [0, 10]
    assert truth["round_purposes"] == ["train", "exploration"]
    np.testing.assert_allclose(truth["A"][0], world.true_A(world.initial_loss))
    assert truth["mixtures"].shape == (15, 4)
    np.testing.assert_allclose(truth["mixtures"][-1], np.eye(4)[0])
    np.testing.assert_allclose(truth["optimal_static_mixture"], world.optimal_static_mixture(100))
    assert truth["optimal_static_loss"] == pytest.approx(world.optimal_static_loss(100))
    np.testing.assert_allclose(truth["closed_form_optimal_mixture"], world.optimal_static_mixture(100, gated=False))


def test_gated_optimum_beats_uniform_and_vertices():
    world = make_world(4, seed=0)
    truth = SimBackend(world, 200).ground_truth()
    best = truth["optimal_static_loss"]
    assert world.static_loss(np.full(4, 0.25), 200).mean() > best
    for vertex in np.eye(4):
        assert world.static_loss(vertex, 200).mean() > best


@pytest.mark.parametrize("setting, message", [
    ("sim.steps=50", "sim.warmup_steps=100 is not below sim.steps=50"),
    ("sim.steps=0", "sim.steps=0 is invalid; it must be a whole number >= 1"),
    ("sim.domains=2.5", "sim.domains=2.5 is invalid; it must be a whole number >= 2"),
    ("sim.eval_noise=-0.1", "sim.eval_noise=-0.1 is invalid; it must be a number >= 0"),
    ("sim.tokens_per_step=0", "sim.tokens_per_step=0 is invalid"),
    ("sim.sampling=foo", "sim.sampling='foo' is invalid; use one of largest_remainder, multinomial"),
    ("sim.min_lr_ratio=2", "sim.min_lr_ratio=2 is invalid; it must be a number between 0 and 1"),
    ("sim.world_seed=-1", "sim.world_seed=-1 is invalid; it must be a whole number >= 0"),
])
def test_bad_sim_setting_keeps_results(tmp_path, setting, message):
    from mixbench import api

    base = ["experiment=sim", "experiment.methods=[stratified,natural]", "experiment.seeds=[0]", "sim.steps=200",
            "sim.warmup_steps=20", f"results_dir={tmp_path}"]
    api.benchmark(overrides=base)
    saved = {path.name: path.read_bytes() for path in (tmp_path / "sim" / "methods").iterdir()}
    # The rerun drops the shortened warmup, so sim.steps=50 meets the default warmup of 100.
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        api.benchmark(overrides=[*[item for item in base if not item.startswith("sim.warmup")], setting])
    assert {path.name: path.read_bytes() for path in (tmp_path / "sim" / "methods").iterdir()} == saved
