"""The walk-throughs of docs/extending.md, end to end through the real command line, shrunk.

tests/plugins/reacher3d.py is the plugin of the walk-throughs: a task family (reacher3d), a prompt-tuning
method (PromptBias) and a denoiser backbone (FiLMDenoiser). Every test runs `promptdiff --plugin <file> ...`
in this process (`main([...])`); worker processes and benchmark cells are separate processes, which see the
plugin through PROMPTDIFF_PLUGINS (set by --plugin, restored after each test).

a. a family of one's own: collect (spawned workers) -> pre-train a PLM -> Prompt Diffuser -> benchmark table;
b. a method of one's own through `promptdiff fit` on point_robot's shipped PLM;
c. a denoiser of one's own chosen by class_path on the command line;
d. a built-in family's task off the built-in grid (cheetah_vel at v* = 1.234) on its shipped PLM and expert;
and, for benchmark cells (fresh processes that get plugins from PROMPTDIFF_PLUGINS only): the plugin's class paths
resolve there (the command line loads them first), and the documented module form runs the plugin's
method and denoiser through `promptdiff benchmark`.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from promptdiff.cli.main import main
from promptdiff.data.hdf5_format import dataset_path, open_trajectories
from promptdiff.envs import get_family

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "reacher3d.py"
MODULE = "promptdiff_plugin_reacher3d"  # the name a plugin file is imported under: promptdiff_plugin_<stem>
SHIPPED = ROOT / "datasets"

# `main([...])` inside pytest: LightningCLI notes that pytest's own argv is ignored
pytestmark = [pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended"),
              pytest.mark.filterwarnings("ignore:.*dataset card not found")]  # fmt: skip

# tiny Prompt Diffuser (the default MLP backbone, shrunk) and tiny PLM
PD_SMALL = ["--model.init_args.cond_dim", "16", "--model.init_args.diffusion_steps", "10",
            "--model.init_args.sample_steps", "3"]  # fmt: skip
PLM_SMALL = ["--model.init_args.width", "32", "--model.init_args.mlp_width", "64", "--model.init_args.layers", "1",
             "--model.init_args.warmup_steps", "2"]  # fmt: skip

def prompt_diffuser_config() -> Path:
    """The Prompt Diffuser entry config that takes any family from --data.init_args.family."""
    return ROOT / "conf" / "point_robot.yaml"


def baseline_config(name: str) -> Path:
    return ROOT / "conf" / "baselines" / f"{name}.yaml"


@pytest.fixture(autouse=True)
def plugin_variable(monkeypatch):
    """`--plugin` appends to PROMPTDIFF_PLUGINS for this process and its children: undo it after the test."""
    monkeypatch.setenv("PROMPTDIFF_PLUGINS", os.environ.get("PROMPTDIFF_PLUGINS", ""))


def promptdiff(*args) -> int:
    """`promptdiff --plugin tests/plugins/reacher3d.py <args>`, in this process."""
    return main(["--plugin", str(PLUGIN), *map(str, args)])


def run_args(tmp: Path, final_json: Path, episodes: int = 1, checkpoints: Path | None = None,
             card_root: Path | None = None) -> list[str]:  # fmt: skip
    """Trainer settings of a shrunk run: CPU, no logger, the final rollout table written to `final_json`."""
    callbacks = [{"class_path": "promptdiff.callbacks.RolloutCallback",
                  "init_args": {"every_n_val_epochs": 1000, "episodes": episodes, "final_table": True,
                                "final_json": str(final_json),
                                "card_root": None if card_root is None else str(card_root)}}]  # fmt: skip
    if checkpoints is not None:
        callbacks.insert(0, {"class_path": "promptdiff.callbacks.ModelCheckpoint",
                             "init_args": {"dirpath": str(checkpoints), "save_last": True}})  # fmt: skip
    return ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_checkpointing", str(checkpoints is not None).lower(),
            "--trainer.default_root_dir", str(tmp / "runs"), "--trainer.callbacks", json.dumps(callbacks)]  # fmt: skip


def finite_returns(summary: dict, tasks) -> dict:
    primary = summary["sets"][summary.get("primary", "expert")]
    assert set(primary["tasks"]) == {str(t) for t in tasks}
    assert all(math.isfinite(v["return_mean"]) for v in primary["tasks"].values())
    assert math.isfinite(primary["return_mean"])
    return primary


@pytest.fixture(scope="module")
def point_robot_root(tmp_path_factory) -> Path:
    """point_robot's few-shot prompt pools (2 episodes per test task) in a scratch data root."""
    root = tmp_path_factory.mktemp("point_robot_data")
    tasks = list(get_family("point_robot").test_tasks)
    assert main(["collect", "--family", "point_robot", "--roles", "[prompt]", "--tasks", json.dumps(tasks),
                 "--prompt_episodes", "2", "--root", str(root), "--workers", "1"]) == 0  # fmt: skip
    return root


# -- a. a task family of one's own ------------------------------------------------------------------------
def test_own_family_collect_pretrain_prompt_diffuser_benchmark(tmp_path):
    data = tmp_path / "data"
    # the prompt pools with 2 spawned workers: they load the plugin before they unpickle a reacher3d job
    assert promptdiff("collect", "--family", "reacher3d", "--root", data, "--roles", "[prompt]",
                      "--episodes_per_task", 2, "--prompt_episodes", 2, "--batch_size", 8, "--workers", 2) == 0  # fmt: skip
    # then the training set (the prompt pool exists and is kept) and the dataset card
    assert promptdiff("collect", "--family", "reacher3d", "--root", data, "--episodes_per_task", 2,
                      "--prompt_episodes", 2, "--workers", 1) == 0  # fmt: skip
    fam = get_family("reacher3d")
    with open_trajectories(dataset_path("reacher3d", "prompt", "expert", data), family="reacher3d") as f:
        assert f.attrs["expert"].startswith("scripted:reacher3d") and sorted(f.tasks) == list(range(16))
        params = f.task_params()
        assert all(np.allclose(params[t], fam.params[t]) for t in range(16))
        assert all(s["return_mean"] > -8 for s in f.task_stats.values()), "the expert does not reach its goals"
    card = json.loads((data / "reacher3d" / "card.json").read_text())
    assert card["summary"]["train_meets_bar"] and card["summary"]["prompt_meets_bar"], card["summary"]

    # pre-train a (tiny) PLM on reacher3d's training tasks with the point_robot pre-training config
    ckpt = tmp_path / "plm_ckpt"
    assert promptdiff("fit", "--config", ROOT / "conf" / "pretrain" / "point_robot.yaml",
                      "--data.init_args.family", "reacher3d", "--data.init_args.root", data,
                      "--data.init_args.batch_size_per_task", 2, "--data.init_args.val_batches", 1,
                      "--trainer.max_steps", 3, "--trainer.val_check_interval", 3, "--trainer.limit_val_batches", 1,
                      *PLM_SMALL, *run_args(tmp_path, tmp_path / "pretrain.json", checkpoints=ckpt)) == 0  # fmt: skip
    pretrain = json.loads((tmp_path / "pretrain.json").read_text())  # the PLM's own rollouts on the test tasks
    assert pretrain["family"] == "reacher3d" and set(pretrain["tasks"]) == {str(t) for t in fam.test_tasks}
    shutil.copy(ckpt / "last.ckpt", data / "reacher3d" / "plm.ckpt")  # where the methods look for the PLM

    # Prompt Diffuser on reacher3d's test tasks, on that PLM (found under the data root)
    final = tmp_path / "pd.json"
    assert promptdiff("fit", "--config", prompt_diffuser_config(), "--data.init_args.family", "reacher3d",
                      "--data.init_args.root", data, "--data.init_args.batch_size", 2, "--data.init_args.val_batches", 1,
                      "--trainer.max_steps", 2, "--trainer.val_check_interval", 2, *PD_SMALL,
                      *run_args(tmp_path, final)) == 0  # fmt: skip
    summary = json.loads(final.read_text())
    assert summary["family"] == "reacher3d" and summary["method"] == "PromptDiffuser"
    finite_returns(summary, fam.test_tasks)

    # the benchmark: every cell is its own `promptdiff fit` process, which gets the plugin from PROMPTDIFF_PLUGINS
    root = f"--data.init_args.root={data}"
    bench = {"name": "extending", "families": ["reacher3d"], "seeds": [0], "episodes": 1, "reference": "prompt_dt",
             "out_dir": str(tmp_path / "results"), "workers": 2,
             "methods": [{"name": "prompt_dt", "config": str(baseline_config("prompt_dt")), "args": [root]},
                         {"name": "prompt_diffuser", "config": str(prompt_diffuser_config()),
                          "args": [root, "--model.init_args.sample_seed={seed}"]}],
             "quick_preset": {"methods": {"prompt_dt": ["--trainer.accelerator=cpu"],
                                          "prompt_diffuser": ["--trainer.accelerator=cpu", "--trainer.max_steps=2",
                                                              "--trainer.val_check_interval=2",
                                                              "--data.init_args.batch_size=2",
                                                              "--data.init_args.val_batches=1",
                                                              "--model.init_args.cond_dim=16",
                                                              "--model.init_args.diffusion_steps=10",
                                                              "--model.init_args.sample_steps=3"]}}}  # fmt: skip
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    assert promptdiff("benchmark", "--config", tmp_path / "bench.yaml", "--quick") == 0
    out = tmp_path / "results" / "extending_quick"
    table = (out / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| reacher3d |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    assert len(cells) == 2 and all(math.isfinite(float(c.split("±")[0])) for c in cells), row
    for method, cls in (("prompt_dt", "PromptDTExpert"), ("prompt_diffuser", "PromptDiffuser")):
        cell = json.loads((out / "cells" / method / "reacher3d" / "seed0.json").read_text())
        assert cell["family"] == "reacher3d" and cell["episodes"] == 1 and cell["method"] == cls
        finite_returns(cell, fam.test_tasks)


# -- b. a prompt-tuning method of one's own -----------------------------------------------------------------
def test_own_method_through_fit(tmp_path, point_robot_root):
    final = tmp_path / "final.json"
    assert promptdiff("fit", "--config", baseline_config("soft_prompt"), "--model", f"{MODULE}.PromptBias",
                      "--data.init_args.family", "point_robot", "--data.init_args.root", point_robot_root,
                      "--model.init_args.plm", SHIPPED / "point_robot" / "plm.ckpt",
                      "--data.init_args.batch_size", 2, "--data.init_args.val_batches", 1,
                      "--trainer.max_steps", 3, "--trainer.val_check_interval", 3, "--trainer.limit_val_batches", 1,
                      *run_args(tmp_path, final, card_root=SHIPPED)) == 0  # fmt: skip
    summary = json.loads(final.read_text())
    fam = get_family("point_robot")
    assert summary["method"] == "PromptBias" and summary["primary"] == "tuned"
    assert summary["tuned_parameters"] == len(fam.test_tasks) * fam.obs_dim  # one state offset per task
    assert set(summary["sets"]) == {"tuned", "expert"}
    finite_returns(summary, fam.test_tasks)


def test_plugin_class_paths_resolve_in_a_fresh_process(tmp_path):
    """A benchmark cell is a fresh `promptdiff fit` process that gets the plugin from PROMPTDIFF_PLUGINS only (no
    --plugin): the plugin's class paths (a method, a denoiser) must resolve there, on a built-in family too."""
    args = [sys.executable, "-m", "promptdiff.cli.main", "fit", "--config", str(baseline_config("soft_prompt")),
            "--model", f"{MODULE}.PromptBias", "--data.init_args.family", "point_robot", "--print_config"]  # fmt: skip
    env = dict(os.environ, PROMPTDIFF_PLUGINS=str(PLUGIN), OMP_NUM_THREADS="1")
    run = subprocess.run(args, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert yaml.safe_load(run.stdout)["model"]["class_path"] == f"{MODULE}.PromptBias"


def test_benchmark_of_plugin_method_and_denoiser_as_a_module(tmp_path, point_robot_root):
    """The documented route for benchmark cells (fresh processes): the plugin as a module on PYTHONPATH, named in
    PROMPTDIFF_PLUGINS, so that its class paths import by themselves; literal braces in args are doubled."""
    pr = ["--trainer.accelerator=cpu", f"--data.init_args.root={point_robot_root}",
          f"--model.init_args.plm={SHIPPED / 'point_robot' / 'plm.ckpt'}", "--trainer.max_steps=2",
          "--trainer.val_check_interval=2", "--data.init_args.batch_size=2", "--data.init_args.val_batches=1"]  # fmt: skip
    film = "--model.init_args.denoiser={{class_path: reacher3d.FiLMDenoiser, init_args: {{hidden: 32, time_dim: 16}}}}"
    bench = {"name": "plugin_parts", "families": ["point_robot"], "seeds": [0], "episodes": 1, "reference": None,
             "out_dir": str(tmp_path / "results"), "workers": 2,
             "methods": [{"name": "prompt_bias", "config": str(baseline_config("soft_prompt")),
                          "args": ["--model=reacher3d.PromptBias", "--model.init_args.prompt_seed={seed}", *pr]},
                         {"name": "film_pd", "config": str(prompt_diffuser_config()),
                          "args": [film, "--model.init_args.cond_dim=16", "--model.init_args.diffusion_steps=10",
                                   "--model.init_args.sample_steps=3", *pr]}]}  # fmt: skip
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(bench))
    # a fresh process: this one has the plugin as a file module already, and one family must not come from both
    env = dict(os.environ, PROMPTDIFF_PLUGINS="reacher3d", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(PLUGIN.parent), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-m", "promptdiff.cli.main", "benchmark", "--config", str(tmp_path / "bench.yaml")],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip
    cells = tmp_path / "results" / "plugin_parts" / "cells"
    logs = "".join(p.read_text()[-1500:] for p in cells.rglob("*.log")) if cells.is_dir() else ""
    assert run.returncode == 0, run.stderr[-2000:] + logs
    fam = get_family("point_robot")
    bias = json.loads((cells / "prompt_bias" / "point_robot" / "seed0.json").read_text())
    assert bias["method"] == "PromptBias" and bias["tuned_parameters"] == len(fam.test_tasks) * fam.obs_dim
    finite_returns(bias, fam.test_tasks)
    pd = json.loads((cells / "film_pd" / "point_robot" / "seed0.json").read_text())
    assert pd["method"] == "PromptDiffuser"
    finite_returns(pd, fam.test_tasks)
    resolved = yaml.safe_load(next((cells / "film_pd").rglob("config.yaml")).read_text())
    assert resolved["model"]["init_args"]["denoiser"]["class_path"] == "reacher3d.FiLMDenoiser"


# -- c. a denoiser backbone of one's own ---------------------------------------------------------------------
def test_own_denoiser_from_the_command_line(tmp_path, point_robot_root):
    from promptdiff.methods import PromptDiffuser

    denoiser = {"class_path": f"{MODULE}.FiLMDenoiser", "init_args": {"hidden": 32, "time_dim": 16}}
    final, ckpt = tmp_path / "final.json", tmp_path / "ckpt"
    assert promptdiff("fit", "--config", prompt_diffuser_config(), "--data.init_args.family", "point_robot",
                      "--data.init_args.root", point_robot_root,
                      "--model.init_args.plm", SHIPPED / "point_robot" / "plm.ckpt",
                      "--model.init_args.denoiser", json.dumps(denoiser), *PD_SMALL,
                      "--data.init_args.batch_size", 2, "--data.init_args.val_batches", 1,
                      "--trainer.max_steps", 2, "--trainer.val_check_interval", 2,
                      *run_args(tmp_path, final, checkpoints=ckpt, card_root=SHIPPED)) == 0  # fmt: skip
    fam = get_family("point_robot")
    summary = json.loads(final.read_text())
    assert summary["method"] == "PromptDiffuser" and set(summary["sets"]) == {"generated", "expert"}
    finite_returns(summary, fam.test_tasks)
    model = PromptDiffuser.load_from_checkpoint(str(ckpt / "last.ckpt"), map_location="cpu")
    film = sys.modules[MODULE].FiLMDenoiser
    assert len(model.diffusers) == len(fam.test_tasks)
    assert all(isinstance(d.denoiser, film) for d in model.diffusers)
    assert summary["tuned_parameters"] == sum(p.numel() for p in model.diffusers.parameters())


# -- d. a task off the built-in grid -----------------------------------------------------------------------
def test_task_off_the_grid_on_the_shipped_plm(tmp_path):
    plugin = tmp_path / "cheetah_vel_offgrid.py"
    plugin.write_text('from promptdiff.envs import get_family, register_family\n\n'
                      'register_family(get_family("cheetah_vel").with_test_params("cheetah_vel_offgrid", [1.234]))\n')
    data = tmp_path / "data"
    off = ["--plugin", str(plugin)]
    # the new task's few-shot pool, from cheetah_vel's shipped expert (task 40: after the 40 built-in tasks)
    assert main([*off, "collect", "--family", "cheetah_vel_offgrid", "--roles", "[prompt]", "--qualities", "[expert]",
                 "--tasks", "[40]", "--prompt_episodes", "2", "--root", str(data), "--workers", "1",
                 "--expert_policy", str(SHIPPED / "cheetah_vel" / "expert_policy.pt")]) == 0  # fmt: skip
    fam = get_family("cheetah_vel_offgrid")
    assert fam.test_tasks == (40,) and fam.plm_name == "cheetah_vel"
    with open_trajectories(dataset_path(fam.name, "prompt", "expert", data), family=fam.name) as f:
        assert f.tasks == [40] and np.allclose(f.task_params()[40], [1.234])
        # observation 8 is the forward velocity (qvel[0]): the expert runs at the new target
        speed = np.mean([t.observations[100:, 8].mean() for t in f.trajectories(40)])
    assert abs(speed - 1.234) < 0.25, f"the expert ran at {speed:.3f}, not at v* = 1.234"

    final = tmp_path / "final.json"
    rc = main([*off, "fit", "--config", str(baseline_config("prompt_dt")),
               "--data.init_args.family", "cheetah_vel_offgrid", "--data.init_args.root", str(data),
               "--model.init_args.plm", str(SHIPPED / "cheetah_vel" / "plm.ckpt"), *run_args(tmp_path, final)])  # fmt: skip
    assert rc == 0
    summary = json.loads(final.read_text())
    assert summary["family"] == "cheetah_vel_offgrid" and summary["method"] == "PromptDTExpert"
    finite_returns(summary, [40])

    # ... and Prompt Diffuser tunes a diffuser for the new task on its few-shot pool (shrunk)
    tuned = tmp_path / "tuned.json"
    assert main([*off, "fit", "--config", str(prompt_diffuser_config()), "--data.init_args.family", "cheetah_vel_offgrid",
                 "--data.init_args.root", str(data), "--data.init_args.batch_size", "2",
                 "--data.init_args.val_batches", "1", "--model.init_args.plm", str(SHIPPED / "cheetah_vel" / "plm.ckpt"),
                 "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", *PD_SMALL,
                 *run_args(tmp_path, tuned)]) == 0  # fmt: skip
    generated = json.loads(tuned.read_text())
    assert generated["method"] == "PromptDiffuser" and set(generated["sets"]) == {"generated", "expert"}
    finite_returns(generated, [40])
