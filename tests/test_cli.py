"""The command line as a user runs it: real Hydra, real training on a small real-text corpus."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import TINY_MODEL, TINY_TRAIN


def overrides(text_folders, cache):
    items = ["data=folders", f"data.path={text_folders}", f"data.cache_dir={cache}", "data.val_fraction=0.15", "data.test_fraction=0.15"]
    items += [f"model.{key}={value}" for key, value in TINY_MODEL.items()]
    items += [f"train.{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in TINY_TRAIN.items()]
    return items


def mixbench(*args, cwd):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "mixbench", *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)


def test_help_lists_commands(tmp_path):
    result = mixbench("--help", cwd=tmp_path)
    assert result.returncode == 0
    # Without a command the usage goes to stderr as a usage error.
    bare = mixbench(cwd=tmp_path)
    assert bare.returncode == 2
    assert bare.stderr.startswith("usage: mixbench <command>")
    for command in ("prepare", "run", "benchmark", "table"):
        assert command in result.stdout
    result = mixbench("run", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "method=natural" in result.stdout
    assert "stratified" in result.stdout


def test_sweep_with_config_printing_is_one_error(tmp_path):
    # Hydra takes -m and --cfg together as a usage error and raises it as a traceback.
    result = mixbench("run", "-m", "method=stratified,natural", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("mixbench: error: -m launches a sweep and --cfg prints a config instead")
    assert "Traceback" not in result.stderr


def test_unknown_command_suggests_close_match(tmp_path):
    result = mixbench("benchmrk", cwd=tmp_path)
    assert result.returncode == 2
    assert "Did you mean benchmark" in result.stderr


def test_misspelt_setting_gets_a_suggestion(tmp_path):
    result = mixbench("run", "train.step=40", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: train.step is not a setting of mixbench run; did you mean train.steps?" in result.stderr
    # The keys of a method depend on the method chosen, the first of a sweep's list here.
    result = mixbench("run", "-m", "method=doremi,doge", "method.mu=0.1", cwd=tmp_path)
    assert "method.mu is not a setting of mixbench run with method=doremi; method doremi takes eta, smoothing," in result.stderr
    result = mixbench("run", "method.eta=1.0", cwd=tmp_path)
    assert "method.eta is not a setting of mixbench run; method stratified takes no settings." in result.stderr
    assert not (tmp_path / "results").exists()
    # In a law sweep, train.* names run-table files; the sweep's own training settings are training.*.
    result = mixbench("laws", "experiment=laws_static", "train.threads=1", cwd=tmp_path)
    assert "this sweep takes its training settings as training.threads." in result.stderr
    # A misspelt option of a config group, also inside a sweep, gets the closest options.
    result = mixbench("run", "-m", "method=natural,odmm", cwd=tmp_path)
    assert "method=odmm has no config file method/odmm.yaml. Did you mean method=odm?" in result.stderr
    assert "method=natural has no config file" not in result.stderr
    # A key under a section that does not exist names the first missing part.
    result = mixbench("run", "trian.steps=40", cwd=tmp_path)
    assert "mixbench: trian is not a setting of mixbench run; did you mean train?" in result.stderr
    # Per-method overrides take new entries and settings with a leading + (or ++ to merge into an entry).
    result = mixbench("benchmark", "experiment=sim", "experiment.method_overrides.aioli={eta: 0.1}", cwd=tmp_path)
    assert "a new one is added with a leading +: +experiment.method_overrides.aioli={eta: 0.1}" in result.stderr
    result = mixbench("benchmark", "experiment.method_overrides.aioli={eta: 0.1}", cwd=tmp_path)
    assert "write ++experiment.method_overrides.aioli={eta: 0.1} (merged into the existing update_steps," in result.stderr
    # experiment= picks a config file; a results folder is named with experiment.name=.
    result = mixbench("table", "experiment=walks", cwd=tmp_path)
    assert "use experiment.name=walks instead" in result.stderr
    assert result.returncode == 2


def test_plugin_config_folder_gets_the_same_hints(tmp_path):
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "upweight.yaml").write_text("name: upweight\nfactor: 2.0\n")
    # A relative search path folder is relative to the current directory.
    result = mixbench("run", "method=upwieght", "hydra.searchpath=[file://conf]", cwd=tmp_path)
    assert result.returncode == 2
    # A plain option is checked before Hydra starts: one error line instead of Hydra's listing.
    assert result.stderr.startswith(
        "mixbench: error: method=upwieght has no config file method/upwieght.yaml. Did you mean method=upweight?")
    assert "Could not find" not in result.stderr
    assert "regmix, skill_it, stratified, upweight." in result.stderr
    # The plugin's config file decides which keys its method has.
    result = mixbench("run", "method=upweight", "method.factr=3", "hydra.searchpath=[file://conf]", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: method.factr is not a setting of mixbench run; did you mean method.factor?" in result.stderr
    result = mixbench("run", "method=upweight", "method.eta=1", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", cwd=tmp_path)
    assert "mixbench: method.eta is not a setting of mixbench run; method upweight takes factor." in result.stderr
    result = mixbench("run", "--help", "hydra.searchpath=[file://conf]", cwd=tmp_path)
    assert "regmix, skill_it, stratified, upweight" in result.stdout
    assert not (tmp_path / "results").exists()


def test_plugin_method_without_config_file_is_explained(tmp_path):
    (tmp_path / "heavy.py").write_text(
        "import numpy as np\nfrom mixbench.method import StaticMethod, register\n\n\n@register\n"
        "class FirstHeavy(StaticMethod):\n    name = 'first_heavy'\n\n"
        "    def optimize(self, context):\n        return np.full(context.m, 1.0 / context.m)\n"
    )
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path))
    arguments = [sys.executable, "-m", "mixbench", "run", "plugins=[heavy]", "method=first_heavy", "experiment=sim"]
    result = subprocess.run(arguments, cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 2
    assert "method first_heavy is registered, but mixbench run needs its config file method/first_heavy.yaml" in result.stderr
    assert "choose it with its class defaults as method.name=first_heavy (settings: +method.KEY=VALUE)" in result.stderr
    arguments = [*arguments[:5], "method.name=first_heavy", "experiment=sim", "sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4"]
    result = subprocess.run(arguments, cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first_heavy seed 0: final mean loss" in result.stderr


def test_benchmark_then_table_rebuilds_identically(text_folders, tmp_path):
    common = overrides(text_folders, tmp_path / "cache")
    result = mixbench("benchmark", *common, "experiment.methods=[stratified,natural]", "experiment.seeds=[0,1]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| stratified |" in result.stdout and "| natural |" in result.stdout
    table = tmp_path / "results" / "default" / "table.md"
    csv = tmp_path / "results" / "default" / "table.csv"
    first_md, first_csv = table.read_text(), csv.read_text()
    header = first_csv.splitlines()[0].split(",")
    for column in ("avg_test_ppl", "std_test_ppl", "delta_vs_stratified", "ppl_python", "bpb_legal", "total_train_tokens", "wall_time_s"):
        assert column in header
    assert "step 12 | val loss" in result.stderr

    table.unlink()
    csv.unlink()
    rebuilt = mixbench("table", "experiment=default", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert table.read_text() == first_md
    assert csv.read_text() == first_csv


def test_run_multirun_sweeps_seeds(text_folders, tmp_path):
    common = overrides(text_folders, tmp_path / "cache")
    result = mixbench("run", "-m", *common, "method=natural", "seed=0,1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = sorted(path.name for path in (tmp_path / "results" / "default" / "methods").glob("*.json"))
    assert saved == ["natural-seed0.json", "natural-seed1.json"]
    # Each line names its member, whose lines would interleave with another's under the joblib launcher.
    finals = [line for line in result.stderr.splitlines() if "average test perplexity" in line]
    assert [line.rsplit(" [", 1)[1] for line in finals] == ["#0 natural seed 0]", "#1 natural seed 1]"]


def test_sweep_bad_value_stops_before_training(tmp_path):
    result = mixbench("run", "-m", "method=doremi", "method.eta=0.5,1.O", "seed=0", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert ("mixbench: error: sweep member 1 (method=doremi method.eta=1.O seed=0 experiment=sim): "
            "method 'doremi' got eta='1.O'; expected a number") in result.stderr
    assert "Launching" not in result.stderr
    assert not (tmp_path / "results").exists()
    # choice() and range() expand as Hydra's basic sweeper expands them, the last key varying fastest.
    result = mixbench("run", "-m", "method=doremi", "method.eta=choice(0.5,abc)", "seed=range(0,2)", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep member 2 (method=doremi method.eta=abc seed=0 experiment=sim)" in result.stderr
    # A corpus run's training settings are checked without building the corpus.
    result = mixbench("run", "-m", "method=natural", "train.steps=40,-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep member 1 (method=natural train.steps=-1): train.steps=-1 is invalid" in result.stderr
    assert not (tmp_path / ".cache").exists()
    # The simulator's training settings, and the benchmark's members.
    result = mixbench("benchmark", "-m", "experiment=sim", "sim.sampling=largest_remainder,bogus", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep member 1 (experiment=sim sim.sampling=bogus): sim.sampling='bogus' is invalid" in result.stderr
    assert not (tmp_path / "results").exists()


def test_sweep_method_check_on_corpus(text_folders, tmp_path):
    # A method's own check needs the corpus (domains, token counts), so the corpus is prepared first.
    common = overrides(text_folders, tmp_path / "cache")
    result = mixbench("run", "-m", *common, "method=doremi", "method.eta=0.5,-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "doremi needs eta > 0" in result.stderr
    assert "sweep member 1 (" in result.stderr
    assert not (tmp_path / "results").exists()
    result = mixbench("run", "-m", *common, "method=fixed", "method.mixture=[0.2,0.3,0.5],[0.5,0.6,0.2]", cwd=tmp_path)
    assert result.returncode == 2
    assert "sums to 1.3, not 1" in result.stderr
    assert not (tmp_path / "results").exists()


def test_large_sweep_checks_each_value(tmp_path):
    # 600 members: each swept value is checked once, and the member is numbered as Hydra numbers it.
    result = mixbench("run", "-m", "method=doremi", "method.eta=0.5,1.O", "seed=range(0,300)", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep member 300 (method=doremi method.eta=1.O seed=0 experiment=sim): method 'doremi' got eta='1.O'" in result.stderr
    assert not (tmp_path / "results").exists()


def test_sweep_check_loads_plugins(tmp_path):
    (tmp_path / "heavy.py").write_text(
        "import numpy as np\nfrom mixbench.method import StaticMethod, register\n\n\n@register\n"
        "class FirstHeavy(StaticMethod):\n    name = 'first_heavy'\n\n"
        "    def optimize(self, context):\n        return np.full(context.m, 1.0 / context.m)\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    arguments = [sys.executable, "-m", "mixbench", "run", "-m", "plugins=[heavy]", "method.name=first_heavy", "experiment=sim",
                 "sim.steps=40", "sim.eval_every=20", "sim.warmup_steps=4", "seed=0,1"]
    result = subprocess.run(arguments, cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first_heavy seed 1: final mean loss" in result.stderr


def test_joblib_zero_jobs_is_rejected(tmp_path):
    result = mixbench("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: error: hydra.launcher.n_jobs=0 is invalid; use a positive number" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_top_level_key_gets_a_suggestion(tmp_path):
    expected = "mixbench: sede is not a setting of mixbench run; did you mean seed?"
    result = mixbench("run", "sede=0", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    result = mixbench("run", "-m", "sede=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    # Config groups that the command composes are candidates too.
    result = mixbench("benchmark", "dta=three", cwd=tmp_path)
    assert "mixbench: dta is not a setting of mixbench benchmark; did you mean data?" in result.stderr
    # A benchmark takes its methods as experiment.methods, so a misspelt method gets that form.
    result = mixbench("benchmark", "methd=doremi", cwd=tmp_path)
    assert "did you mean method?" not in result.stderr
    assert "methd is not a setting of mixbench benchmark. If you meant method:" in result.stderr
    assert "write 'experiment.methods=[doremi]'" in result.stderr
    result = mixbench("benchmark", "methd=[doremi,odm]", cwd=tmp_path)
    assert "write 'experiment.methods=[doremi,odm]', and give doremi's settings" in result.stderr
    # laws composes no method group, so method is not offered.
    result = mixbench("laws", "methd=doremi", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean method?" not in result.stderr
    # Hydra writes the sweep's multirun.yaml before it composes the members, but nothing trains.
    assert not list(tmp_path.glob("results/*/methods"))


def test_group_the_command_lacks_gets_hint(tmp_path):
    # benchmark has no method group: a method's settings go under experiment.method_overrides.
    result = mixbench("benchmark", "experiment.methods=[stratified]", "method.mixture={legal: 1.0}", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean method?" not in result.stderr
    assert "mixbench: method.mixture is not a setting of mixbench benchmark, which runs the methods in experiment.methods" in result.stderr
    assert "write '+experiment.method_overrides.fixed.mixture={legal: 1.0}' and add fixed to experiment.methods." in result.stderr
    # aioli's entry in the default experiment lists update_steps already, so no + is needed.
    result = mixbench("benchmark", "method.update_steps=7", cwd=tmp_path)
    assert "write 'experiment.method_overrides.aioli.update_steps=7' (methods with a setting update_steps: aioli, skill_it)." in result.stderr
    result = mixbench("benchmark", "experiment.methods=[stratified,natural]", "method=fixed", cwd=tmp_path)
    assert result.returncode == 2
    assert "write 'experiment.methods=[stratified,natural,fixed]', and give fixed's settings as ++experiment.method_overrides.fixed.KEY=VALUE." in result.stderr
    # table reads records only.
    result = mixbench("table", "experiment.name=mine", "train.threads=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean train?" not in result.stderr
    assert "mixbench: train.threads is not a setting of mixbench table, which takes no train settings; remove train.threads=1." in result.stderr
    assert "The settings of mixbench table are experiment, out_dir, results_dir, table." in result.stderr
    # laws has no experiment until a law sweep is chosen.
    result = mixbench("laws", "experiment.laws=[linear]", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean experiment?" not in result.stderr
    assert "mixbench: experiment.laws is not a setting of mixbench laws until a law sweep is chosen" in result.stderr
    assert "add experiment=laws_static. The options with experiment.laws are laws_static, laws_static_sim." in result.stderr
    assert not (tmp_path / "results").exists()


def test_benchmark_rejects_added_method_config(tmp_path):
    result = mixbench("benchmark", "experiment=sim", "+method=fixed", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: error: mixbench benchmark has no method config, so +method=fixed would be ignored." in result.stderr
    assert "'experiment.methods=[stratified,fixed]'" in result.stderr
    result = mixbench("benchmark", "experiment=sim", "+method.mixture=[1,0,0,0,0]", cwd=tmp_path)
    assert result.returncode == 2
    assert "so +method.mixture would be ignored" in result.stderr
    assert not list(tmp_path.glob("results/*/methods/*"))


def test_launcher_mistakes_get_hints(tmp_path):
    result = mixbench("run", "-m", "hydra/launcher=jobib", "seed=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: hydra/launcher=jobib names no launcher. Did you mean hydra/launcher=joblib?" in result.stderr
    assert "The launchers are basic, joblib, slurm, submitit_local, submitit_slurm." in result.stderr
    result = mixbench("run", "-m", "hydra.launcher.n_jobs=2", "seed=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: hydra.launcher.n_jobs=2 sets an option of another launcher, but the command uses Hydra's basic" in result.stderr
    assert "`hydra/launcher=joblib hydra.launcher.n_jobs=2`" in result.stderr
    result = mixbench("run", "-m", "hydra/launcher=slurm", "hydra.launcher.partion=gpu", "seed=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "hydra.launcher.partion is not a setting of launcher slurm; did you mean hydra.launcher.partition?" in result.stderr
    assert not (tmp_path / "results").exists()


def test_slurm_launcher_without_slurm_rejected(tmp_path):
    if shutil.which("srun"):
        pytest.skip("this machine has SLURM's srun")
    result = mixbench("run", "-m", "hydra/launcher=slurm", "seed=0,1", "experiment=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert "mixbench: error: hydra/launcher=slurm submits to a SLURM cluster, but this machine has no srun command" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_missing_submitit_plugin_names_the_extra(monkeypatch):
    from mixbench import launchers

    monkeypatch.setattr(launchers, "_submitit_installed", lambda: False)
    for name in ("slurm", "submitit_local"):
        hints = launchers.launcher_hints([f"hydra/launcher={name}", "seed=0,1"])
        assert len(hints) == 1
        assert 'install it with `pip install -e ".[slurm]"`' in hints[0]
    assert launchers.launcher_hints(["hydra/launcher=joblib"]) == []


def test_only_rank_zero_logs_progress(text_folders, tmp_path):
    # torchrun sets RANK in every process it starts; each runs the whole command.
    data = [item for item in overrides(text_folders, tmp_path / "cache") if item.startswith("data")]
    arguments = [sys.executable, "-m", "mixbench", "prepare", *data]
    lines = {}
    for rank in ("0", "1"):
        environment = dict(os.environ, OMP_NUM_THREADS="1", RANK=rank)
        result = subprocess.run(arguments, cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        lines[rank] = result.stderr
    assert "mixbench: corpus " in lines["0"]
    assert "mixbench: corpus " not in lines["1"]
    assert "mixbench: domain " not in lines["1"]


def test_added_key_typo_rejected(tmp_path):
    from mixbench.override_hints import added_key_typos

    # Hydra suggests a leading + for a misspelt key; the key it adds would be read by nothing.
    assert added_key_typos("benchmark", ["+experiment.method=[natural]"]) == [
        "+experiment.method adds a new setting that mixbench never reads; did you mean experiment.methods? "
        "Set it without the +: experiment.methods=[natural]."]
    assert "did you mean method.eta?" in added_key_typos("run", ["method=aioli", "+mthod.eta=2"])[0]
    assert "did you mean seed?" in added_key_typos("figures", ["+seeds=1"])[0]
    # New per-method entries and unrelated new keys are added with + on purpose.
    assert added_key_typos("benchmark", ["+experiment.method_overrides.fixed={mixture: [1]}"]) == []
    assert added_key_typos("run", ["+method.temperature=2"]) == []

    result = mixbench("table", "+experimnt=sim", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("mixbench: error: +experimnt adds a new setting that mixbench never reads; did you mean experiment?")
