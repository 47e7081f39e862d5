"""Every config file loads, names what it reproduces, and composes into a valid command config."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mixbench.errors import ConfigError
from mixbench.method import build_method
from mixbench.setting import check_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
COMMANDS = ["prepare", "run", "benchmark", "table"]
GROUP_FILES = sorted(path for path in CONF.glob("*/*.yaml") if path.parent.name != "hydra")


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda path: str(path.relative_to(CONF)))
def test_config_file_has_header_and_loads(path):
    text = path.read_text()
    comments = [line for line in text.splitlines() if line.startswith("#") and "@package" not in line]
    assert comments, f"{path} has no header comment saying what it is"
    if path.parent.name != "hydra" and path.parent.parent.name != "hydra":
        assert any("mixbench" in line for line in comments), f"{path} header does not say how to launch it"
    OmegaConf.load(path)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_config_composes(command):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=command, return_hydra_config=True)
    assert cfg.results_dir == "results"


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_group_option_composes(path):
    group, option = path.parent.name, path.stem
    command = "benchmark" if group == "experiment" else "run"
    if group == "data":
        command = "prepare"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=command, overrides=[f"{group}={option}"])
    if group == "method":
        build_method(OmegaConf.to_container(cfg.method, resolve=True))
    if group in ("model", "train", "experiment"):
        check_settings(OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.train))


def _default_run_settings() -> tuple[dict, dict]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="run", overrides=["train.bf16=true"])
    return OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.train)


def test_bf16_warns_once_on_emulating_cpu(monkeypatch, caplog):
    import mixbench.setting as setting

    monkeypatch.setattr(setting, "_cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(setting, "_warned_slow_bf16", False)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    model, train = _default_run_settings()
    with caplog.at_level("WARNING", logger="mixbench.setting"):
        check_settings(model, train)
        check_settings(model, train)
    warnings = [record.getMessage() for record in caplog.records if "bf16" in record.getMessage()]
    assert len(warnings) == 1
    assert "set train.bf16=false" in warnings[0]


def test_bf16_silent_on_native_cpu(monkeypatch, caplog):
    import mixbench.setting as setting

    monkeypatch.setattr(setting, "_cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(setting, "_warned_slow_bf16", False)
    model, train = _default_run_settings()
    with caplog.at_level("WARNING", logger="mixbench.setting"):
        check_settings(model, train)
    assert not [record for record in caplog.records if "bf16" in record.getMessage()]


@pytest.mark.parametrize("value", ["no", "off", "yes", 1, 0])
def test_bf16_must_be_boolean(value):
    model, train = _default_run_settings()
    train["bf16"] = value
    with pytest.raises(ConfigError, match=rf"train.bf16={value!r} is invalid; set train.bf16=true or train.bf16=false"):
        check_settings(model, train)


def _launch_overrides(path: Path) -> list[str]:
    """Return the overrides of the first `Launch: mixbench run ...` line of a config header."""
    for line in path.read_text().splitlines():
        if line.startswith("# Launch: mixbench run"):
            command = line.split("mixbench run", 1)[1].split("(")[0]
            return [item.strip("'") for item in command.split()]
    return []


@pytest.mark.parametrize("path", sorted((CONF / "method").glob("*.yaml")), ids=lambda path: path.stem)
def test_method_launch_line_passes_checks(path):
    import numpy as np

    from mixbench.method import MethodContext

    overrides = _launch_overrides(path)
    assert overrides, f"{path} has no 'Launch: mixbench run' line"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    domains = tuple(cfg.data.domains)
    train = cfg.train
    context = MethodContext(domains=domains, eval_sets=domains, train_tokens=np.full(len(domains), 1e6),
                            total_steps=int(train.steps), tokens_per_step=int(train.batch_size) * int(cfg.model.context))
    build_method(OmegaConf.to_container(cfg.method, resolve=True)).check(context)
