"""Figures and videos: the `promptdiff.viz` drawings, the prompt-space image and the rollout video that the real
Prompt Diffuser config logs to TensorBoard, and the video's single warning where MuJoCo cannot render."""

import csv
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from promptdiff.callbacks.video import encode_gif
from conftest import link_shipped_plms, resolved_config
from promptdiff.cli.main import main
from promptdiff.production.collect import collect, default_collect_config
from promptdiff.envs import get_family
from promptdiff.models import Prompt, PromptTokens
from promptdiff.models.prompt_dt import PromptDT
from promptdiff.rollout import RenderingUnavailable, render_episode
from promptdiff.viz import (benchmark_figure, denoising_figure, find_benchmark_table, project_2d, prompt_points,
                            prompt_space_figure, prompt_states_figure, read_benchmark_table, returns_figure,
                            save_figure)  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
SMALL = dict(denoiser={"class_path": "promptdiff.models.MLPDenoiser", "init_args": {"hidden": 32, "blocks": 1, "time_dim": 16}},
             cond_dim=16, diffusion_steps=10)


def _prompt(P=2, L=5, obs=3, act=2, seed=0) -> Prompt:
    g = torch.Generator().manual_seed(seed)
    return Prompt(torch.randn(P, L, obs, generator=g), torch.rand(P, L, act, generator=g) * 2 - 1,
                  torch.rand(P, L, 1, generator=g), torch.arange(L).expand(P, L), torch.ones(P, L))  # fmt: skip


def _is_png(path: Path) -> bool:
    data = Path(path).read_bytes()
    return data.startswith(PNG) and len(data) > 3_000


# -- promptdiff.viz ----------------------------------------------------------------------------------
def test_projection_is_pca_for_few_points_and_tsne_for_many():
    rng = np.random.default_rng(0)
    few = rng.normal(size=(6, 10))
    Y, used = project_2d(few)
    assert used == "PCA" and Y.shape == (6, 2)
    # two well separated clusters stay apart under t-SNE
    many = np.concatenate([rng.normal(0, 0.1, (15, 10)), rng.normal(5, 0.1, (15, 10))])
    Y, used = project_2d(many, seed=0)
    assert used == "t-SNE" and Y.shape == (30, 2)
    a, b = Y[:15].mean(0), Y[15:].mean(0)
    assert np.linalg.norm(a - b) > 3 * max(Y[:15].std(0).max(), Y[15:].std(0).max())
    assert project_2d(many, "pca")[1] == "PCA"
    assert project_2d(np.ones((1, 4)))[0].shape == (1, 2)  # a single point: no crash
    with pytest.raises(ValueError, match="at least 4"):
        project_2d(few[:3], "tsne")


def test_prompt_points_trajectory_and_token_spaces():
    plm = PromptDT(3, 2, width=16, layers=1, mlp_width=32, context_length=4, max_timestep=20)
    a, b = _prompt(P=2), _prompt(P=1, seed=1)
    X, tasks, labels, space = prompt_points([("expert", 1, a), ("generated", 2, b)])
    assert space == "trajectory" and X.shape == (3, 5 * (3 + 2))
    assert tasks.tolist() == [1, 1, 2] and labels.tolist() == ["expert", "expert", "generated"]
    np.testing.assert_allclose(X[0], torch.cat([a.states, a.actions], -1)[0].reshape(-1).numpy())
    soft = PromptTokens(torch.randn(1, 15, 16), torch.ones(1, 5))
    X, tasks, labels, space = prompt_points([("expert", 1, a), ("soft", 1, soft)], plm=plm)
    assert space == "tokens" and X.shape == (3, 15 * 16)
    np.testing.assert_allclose(X[2], soft.tokens.reshape(-1).numpy())
    with torch.no_grad():
        np.testing.assert_allclose(X[0], plm.embed_prompt(a).tokens[0].reshape(-1).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="pass plm"):
        prompt_points([("soft", 1, soft), ("expert", 1, a)])
    with pytest.raises(ValueError, match="use space 'tokens'"):
        prompt_points([("soft", 1, soft)], space="trajectory")


def test_every_figure_draws_to_a_png(tmp_path):
    rng = np.random.default_rng(0)
    chain = rng.normal(size=(11, 5, 4))
    save_figure(denoising_figure(chain, chain[-1] + 0.1, dims=3, title="chain"), tmp_path / "chain.png")
    save_figure(denoising_figure(chain), tmp_path / "chain_no_expert.png")
    rows = {"noise": {1: chain[0], 2: chain[0]}, "generated": {1: chain[-1], 2: chain[-1]},
            "expert": {1: chain[-1] + 0.1, 2: chain[-1]}}  # fmt: skip
    fig = prompt_states_figure(rows, reference="expert", title="states")
    assert "RMS gap 0.10" in fig.axes[1].get_title()
    save_figure(fig, tmp_path / "states.png")
    evaluated = {"tasks": {1: {"return_mean": 10.0, "return_std": 1.0}, 2: {"return_mean": 5.0, "return_std": 0.5}}}
    summarised = {"tasks": {"1": {"return_mean": 9.0}, "2": {"return_mean": 6.0}}}  # a rollout_final.json set
    save_figure(returns_figure({"expert": evaluated, "generated": summarised}), tmp_path / "returns.png")
    Y = rng.normal(size=(12, 2))
    save_figure(prompt_space_figure(Y, np.repeat([1, 2, 3], 4), np.array(["a", "b"] * 6), projection="PCA"),
                tmp_path / "space.png")  # fmt: skip
    for name in ("chain", "chain_no_expert", "states", "returns", "space"):
        assert _is_png(tmp_path / f"{name}.png"), name


def _write_table(path: Path, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "family", "seeds", "seeds_expected", "return_mean", "return_std", "score_mean",
                    "score_std", "tuned_parameters", "wall_time_s"])  # fmt: skip
        w.writerows(rows)


def test_benchmark_tables_are_found_read_and_drawn(tmp_path):
    results = tmp_path / "results"
    assert find_benchmark_table(results) is None  # no folder: no table, no error
    _write_table(results / "guidance" / "table.csv", [["a", "ant_dir", 3, 3, 900.0, 10.0, "", "", 100, 1.0]])
    assert find_benchmark_table(results).parent.name == "guidance"  # any table when no preferred one
    _write_table(results / "table1_quick" / "table.csv",
                 [["prompt_dt", "point_robot", 1, 1, -5.0, 0.0, 0.98, 0.0, 0, 2.0],
                  ["soft_prompt", "point_robot", 0, 1, "", "", "", "", "", 0.0]])  # fmt: skip
    _write_table(results / "table1" / "table.csv", [["prompt_dt", "ant_dir", 3, 3, 950.0, 20.0, 1.0, 0.1, 0, 9.0]])
    assert find_benchmark_table(results).parent.name == "table1"
    rows = read_benchmark_table(results / "table1_quick" / "table.csv")
    assert rows[0]["score_mean"] == pytest.approx(0.98) and rows[1]["return_mean"] is None
    fig = benchmark_figure(rows)
    assert fig.axes[0].get_ylabel() == "normalised score"
    assert any(t.get_text() == "missing" for t in fig.axes[0].texts)
    no_scores = read_benchmark_table(results / "guidance" / "table.csv")
    assert benchmark_figure(no_scores).axes[0].get_ylabel() == "mean return"
    save_figure(fig, tmp_path / "bench.png")
    assert _is_png(tmp_path / "bench.png")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a benchmark table"):
        read_benchmark_table(tmp_path / "other.csv")


def test_gif_holds_every_frame():
    from PIL import Image

    frames = np.zeros((4, 12, 16, 3), np.uint8)
    for i in range(4):
        frames[i, :, : 4 * (i + 1)] = 255
    image = Image.open(io.BytesIO(encode_gif(frames, fps=10)))
    assert image.size == (16, 12) and image.n_frames == 4


def test_families_without_rendering_raise_before_any_step():
    from promptdiff.methods import PromptDiffuser

    module = PromptDiffuser("point_robot", **SMALL)
    task = get_family("point_robot").test_tasks[0]
    prompt = Prompt.empty(2, 2)
    with pytest.raises(RenderingUnavailable, match="point_robot cannot be rendered"):
        render_episode(module.rollout_policy(), "point_robot", task, prompt)


# -- the real config: TensorBoard images and the video ---------------------------------------------
@pytest.fixture(scope="module")
def ant_data(tmp_path_factory) -> Path:
    """2 training and 2 prompt-pool episodes of each ant_dir test task."""
    root = tmp_path_factory.mktemp("fig_data")
    cfg = default_collect_config("ant_dir", root=str(root), tasks=list(get_family("ant_dir").test_tasks),
                                 episodes_per_task=2, prompt_episodes=2, card=False, workers=1)  # fmt: skip
    cfg.expert_policy = str(ROOT / "datasets" / "ant_dir" / "expert_policy.pt")  # the shipped actor
    collect(cfg)
    link_shipped_plms(root, "ant_dir")
    return root


def real_callbacks(tmp_path: Path, keep: tuple[str, ...] | None = None) -> list[dict]:
    """conf/ant_dir.yaml's own callbacks, each shrunk (fewer episodes, prompts and frames, every validation)."""
    small = {"ModelCheckpoint": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 1},
             "RolloutCallback": {"episodes": 1, "every_n_val_epochs": 1},
             "DenoisingChainCallback": {"dims": 3},
             "PromptSpaceCallback": {"prompts_per_task": 1},  # 5 tasks x 2 sets = 10 points: PCA
             "RolloutVideoCallback": {"every_n_val_epochs": 1, "frame_every": 50}}  # fmt: skip
    out = []
    for cb in resolved_config(ROOT / "conf" / "ant_dir.yaml")["trainer"]["callbacks"]:
        name = cb["class_path"].rsplit(".", 1)[1]
        if keep is None or name in keep:
            out.append({"class_path": cb["class_path"], "init_args": {**cb.get("init_args", {}), **small[name]}})
    return out


def fit_args(tmp_path: Path, data: Path, callbacks: list[dict]) -> list[str]:
    args = ["fit", "--config", str(ROOT / "conf" / "ant_dir.yaml"), "--trainer.max_steps", "2",
            "--trainer.val_check_interval", "1", "--trainer.accelerator", "cpu",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.callbacks", json.dumps(callbacks),
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
            "--data.init_args.root", str(data), "--data.init_args.batch_size", "2",
            "--data.init_args.val_batches", "1"]  # fmt: skip
    for key, value in SMALL.items():
        args += [f"--model.init_args.{key}", str(value)]
    return args


def _tags(run_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents.*"))), size_guidance={"images": 0})
    acc.Reload()
    return {k: set(v) for k, v in acc.Tags().items() if isinstance(v, list)}


def test_real_config_logs_figures_and_warns_once_without_rendering(ant_data, tmp_path, monkeypatch):
    names = [c["class_path"].rsplit(".", 1)[1] for c in real_callbacks(tmp_path)]
    assert {"PromptSpaceCallback", "RolloutVideoCallback", "DenoisingChainCallback"} <= set(names)
    for family in ("cheetah_dir", "cheetah_vel", "ant_dir", "ant_dir_ood", "ml1_reach", "ml1_pick_place",
                   "point_robot"):  # fmt: skip
        used = {c["class_path"] for c in resolved_config(ROOT / "conf" / f"{family}.yaml")["trainer"]["callbacks"]}
        assert "promptdiff.callbacks.PromptSpaceCallback" in used, family
        assert ("promptdiff.callbacks.RolloutVideoCallback" in used) == (family != "point_robot"), family
    # no rendering: MUJOCO_GL unset (MuJoCo's default, GLFW) on a machine without a display
    for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(fit_args(tmp_path, ant_data, real_callbacks(tmp_path))) == 0  # 2 validations + fit end: 3 tries
    video = [w for w in caught if str(w.message).startswith("RolloutVideoCallback")]
    assert len(video) == 1, [str(w.message) for w in video]
    assert "MUJOCO_GL=egl" in str(video[0].message)
    leaked = [str(w.message) for w in caught if w not in video and
              any(k in f"{w.category.__name__} {w.message}" for k in ("GLFW", "OpenGL", "render", "Unraisable"))]
    assert not leaked
    tags = _tags(tmp_path / "runs")
    assert {"train/L_DM", "train/L_P", "val/L_DM", "rollout/return_mean/generated"} <= tags["scalars"]
    assert {"figures/denoising_chain", "figures/prompt_space"} <= tags["images"]
    assert not any(t.startswith("video/") for t in tags["images"])


SCRIPT = """
import json, sys
import numpy as np
from promptdiff.cli.main import main
from promptdiff.data.fewshot import FewShotDataModule
from promptdiff.methods import PromptDiffuser
from promptdiff.rollout import evaluate_sequential, render_episode
code = main(json.loads(sys.argv[1]))
# rendering changes nothing: the rendered episode is the evaluator's episode 0 of the same seed
module = PromptDiffuser("ant_dir", **json.loads(sys.argv[2]))
dm = FewShotDataModule("ant_dir", root=sys.argv[3])
task = module.family.test_tasks[0]
prompt = module.expert_prompts(dm, [task], 0)[task]
shown = render_episode(module.rollout_policy(), "ant_dir", task, prompt, seed=3, frame_every=100)
reference = evaluate_sequential(module.rollout_policy(), "ant_dir", [task], {task: prompt}, 1, seed=3)
print(json.dumps({"code": code, "rendered": shown["return"], "evaluated": reference["tasks"][task]["returns"][0],
                  "frames": list(shown["frames"].shape)}))
"""


def test_video_is_logged_where_mujoco_renders(ant_data, tmp_path):
    """In a fresh process (PyOpenGL picks its platform once per process), with MUJOCO_GL=egl."""
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    env.update(MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    callbacks = real_callbacks(tmp_path, keep=("PromptSpaceCallback", "RolloutVideoCallback"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(fit_args(tmp_path, ant_data, callbacks)),
                           json.dumps(SMALL), str(ant_data)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "no rollout video in this run" in proc.stderr:
        pytest.skip("MuJoCo cannot render offscreen with EGL on this machine: " + proc.stderr[-400:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["rendered"] == pytest.approx(result["evaluated"])
    assert result["frames"][0] >= 2 and result["frames"][3] == 3
    tags = _tags(tmp_path / "runs")
    task = get_family("ant_dir").test_tasks[0]
    assert f"video/rollout_task{task}" in tags["images"] and "figures/prompt_space" in tags["images"]
    from PIL import Image

    gifs = sorted((tmp_path / "runs").rglob("videos/*.gif"))
    # validations at steps 1 and 2; the end of fit (step 2 again) records nothing new
    assert [g.name for g in gifs] == [f"rollout_task{task}_step1.gif", f"rollout_task{task}_step2.gif"]
    with Image.open(gifs[-1]) as gif:
        assert gif.n_frames >= 2 and gif.size == (240, 180)
