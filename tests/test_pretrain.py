"""Prompt-DT pre-training: every real pretrain config, shrunk, runs through `promptdiff fit`;
a resumed run continues exactly like an uninterrupted one."""

import json
import re
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from conftest import link_shipped_plms, resolved_config
from promptdiff.cli.main import main
from promptdiff.production.collect import collect, default_collect_config
from promptdiff.data.datamodule import PromptDTDataModule
from promptdiff.envs import get_family
from promptdiff.methods import PromptDTPretrain
from promptdiff.safe_io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["cheetah_dir", "cheetah_vel", "ant_dir", "ant_dir_ood", "ml1_reach", "ml1_pick_place", "point_robot"]


def tiny_data(family: str, root: Path) -> list[int]:
    """Collect 2 episodes (and a 2-episode pool) for two training tasks and every test task."""
    fam = get_family(family)
    train = list(fam.train_tasks[:2])
    tasks = sorted(set(train) | set(fam.test_tasks))
    data_family = fam.dataset_family
    cfg = default_collect_config(data_family, root=str(root), tasks=tasks, episodes_per_task=2, prompt_episodes=2,
                                 card=False, workers=1)
    for key, name in (("expert_policy", "expert_policy.pt"), ("medium_policy", "medium_policy.pt")):
        if getattr(cfg, key):  # the shipped actors
            setattr(cfg, key, str(ROOT / "datasets" / data_family / name))
    collect(cfg)
    link_shipped_plms(root, family)  # where methods look for them: <root>/<family>/
    return train


def shrink_args(tmp_path: Path, train_tasks: list[int], steps: int = 3) -> list[str]:
    callbacks = [
        {"class_path": "promptdiff.callbacks.ModelCheckpoint",  # the configs' checkpoint callback
         "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 2, "save_last": True}},
        {"class_path": "promptdiff.callbacks.RolloutCallback",
         "init_args": {"every_n_val_epochs": 1, "episodes": 1, "card_root": str(tmp_path / "data")}},
    ]
    return ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.callbacks", json.dumps(callbacks), "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
            "--data.init_args.root", str(tmp_path / "data"), "--data.init_args.batch_size_per_task", "2",
            "--data.init_args.val_batches", "1", "--data.init_args.train_tasks", str(train_tasks),
            "--model.init_args.width", "32", "--model.init_args.mlp_width", "64", "--model.init_args.layers", "1",
            "--model.init_args.warmup_steps", "2"]  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_shrunk_pretrain_config_fits_logs_and_checkpoints(family, tmp_path):
    train = tiny_data(family, tmp_path / "data")
    config = ROOT / "conf" / "pretrain" / f"{family}.yaml"
    assert resolved_config(config)["data"]["init_args"]["family"] == family
    assert main(["fit", "--config", str(config), *shrink_args(tmp_path, train)]) == 0
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard logged nothing"
    tags = _scalar_tags(events[0])
    assert {"train/action_mse", "val/action_mse", "rollout/return_mean"} <= tags
    assert {f"rollout/return_task{t}" for t in get_family(family).test_tasks} <= tags
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    # 3 steps with a save every 2: Lightning's own callback would leave step 2 in last.ckpt
    assert load_checkpoint(ckpt)["global_step"] == 3  # a full Lightning checkpoint passes the safe loader
    policy = PromptDTPretrain.load_policy(str(ckpt))  # rebuilt from the checkpoint alone
    fam = get_family(family)
    assert policy.hparams.family == family and policy.model.obs_dim == fam.obs_dim
    dm = PromptDTDataModule(family, root=str(tmp_path / "data"), train_tasks=train)
    units = dm.plm_units()
    # the checkpoint carries the PLM's units: the training tasks' statistics, scale, clip and lengths
    assert policy.units == units
    assert policy.units.rtg_scale == fam.rtg_scale and policy.units.max_timestep == fam.horizon
    torch.testing.assert_close(policy.state_mean, torch.as_tensor(units.state_mean, dtype=torch.float32))
    assert not np.allclose(policy.units.state_std, 1.0)


def _scalar_tags(event_file: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_promptdiff_test_writes_rollout_summary(tmp_path):
    train = tiny_data("point_robot", tmp_path / "data")
    config = str(ROOT / "conf" / "pretrain" / "point_robot.yaml")
    assert main(["fit", "--config", config, *shrink_args(tmp_path, train)]) == 0
    args = shrink_args(tmp_path / "t", train)
    assert main(["test", "--config", config, *args, "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")]) == 0
    summary = json.loads(next((tmp_path / "t" / "runs").rglob("rollout_test.json")).read_text())
    fam = get_family("point_robot")
    assert sorted(map(int, summary["tasks"])) == list(fam.test_tasks)
    assert all(-fam.horizon * 3 < v["return_mean"] < 0 for v in summary["tasks"].values())
    assert 0.0 <= summary["success_mean"] <= 1.0


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def _fit(tmp_path, train, max_steps, ckpt_path=None, ckpt_dir=None):
    torch.manual_seed(0)
    module = PromptDTPretrain("point_robot", width=32, mlp_width=64, layers=1, warmup_steps=3, dropout=0.1)
    dm = PromptDTDataModule("point_robot", root=str(tmp_path / "data"), batch_size_per_task=4, train_tasks=train)
    rec = LossRecorder()
    callbacks = [rec]
    if ckpt_dir:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=3, save_top_k=-1))
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        limit_val_batches=0, gradient_clip_val=0.25, callbacks=callbacks,
                        enable_checkpointing=bool(ckpt_dir), enable_model_summary=False)  # fmt: skip
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return rec.losses


def test_resumed_run_continues_the_same_loss_curve(tmp_path):
    train = tiny_data("point_robot", tmp_path / "data")
    full = _fit(tmp_path, train, 6)
    first = _fit(tmp_path, train, 3, ckpt_dir=tmp_path / "ck")
    ckpt = next((tmp_path / "ck").glob("*step=3*.ckpt"))
    torch.manual_seed(123)  # the resumed process starts from a different RNG state
    second = _fit(tmp_path, train, 6, ckpt_path=str(ckpt))
    np.testing.assert_allclose(first, full[:3], rtol=1e-6)
    np.testing.assert_allclose(second, full[3:], rtol=1e-6)
    assert len(set(np.round(full, 6))) > 1


def _is_entry(config: Path) -> bool:
    """A config that `promptdiff fit --config` runs on its own (not a part that others compose)."""
    text = config.read_text()
    return "model:" in text and "data:" in text and "benchmark" not in config.parts


def test_every_config_checkpoints_the_final_step():
    # Lightning's ModelCheckpoint keeps only the last periodic save in last.ckpt; ours adds the final step
    entries = [c for c in sorted((ROOT / "conf").rglob("*.yaml")) if _is_entry(c)]
    assert len(entries) >= 20
    for config in entries:
        callbacks = (resolved_config(config).get("trainer") or {}).get("callbacks") or []
        paths = [c["class_path"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
        assert paths in ([], ["promptdiff.callbacks.ModelCheckpoint"]), config


def test_sigterm_leaves_a_resumable_last_checkpoint_and_exits_non_zero(tmp_path):
    """A cluster's preemption (SIGTERM): the run finishes its step, writes last.ckpt with it and exits 143; resuming
    from last.ckpt continues at that step."""
    import signal
    import subprocess
    import sys
    import time

    train = tiny_data("point_robot", tmp_path / "data")
    ckpt_dir = tmp_path / "ckpt"
    callbacks = [{"class_path": "promptdiff.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(ckpt_dir), "every_n_train_steps": 10**7, "save_last": True}}]  # fmt: skip
    args = ["fit", "--config", str(ROOT / "conf" / "pretrain" / "point_robot.yaml"), "--trainer.accelerator", "cpu",
            "--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks", json.dumps(callbacks), "--data.init_args.root", str(tmp_path / "data"),
            "--data.init_args.batch_size_per_task", "2", "--data.init_args.train_tasks", str(train),
            "--model.init_args.width", "16", "--model.init_args.mlp_width", "32", "--model.init_args.layers", "1"]  # fmt: skip
    log = tmp_path / "fit.log"
    cmd = [sys.executable, "-c", "import sys; from promptdiff.cli.main import main; sys.exit(main())"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # the log shows each line as it is printed
    with open(log, "w") as out:
        proc = subprocess.Popen([*cmd, *args, "--trainer.max_steps", "100000"], stdout=out, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip
        deadline = time.time() + 120
        while "Trainable params" not in log.read_text() and time.time() < deadline:  # the model summary: fit begins
            time.sleep(0.2)
        time.sleep(3)  # some steps
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-2000:]
    assert "stopped by SIGTERM" in text and "last.ckpt" in text
    stopped_at = load_checkpoint(ckpt_dir / "last.ckpt")["global_step"]
    assert stopped_at > 0, "no step was finished before the signal"
    resumed = subprocess.run([*cmd, *args, "--trainer.max_steps", str(stopped_at + 2), "--ckpt_path",
                              str(ckpt_dir / "last.ckpt")], env=env, capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == stopped_at + 2  # two more steps, not from 0
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # rewritten in place, no last-v1.ckpt


def test_diverging_pretraining_stops_with_the_step_and_leaves_no_nan_plm(tmp_path, capsys):
    """A learning rate far too high: the run stops at the first non-finite loss (exit 2, one line naming the step)
    instead of finishing with exit 0 and an all-NaN last.ckpt."""
    train = tiny_data("point_robot", tmp_path / "data")
    args = shrink_args(tmp_path, train, steps=6)
    code = main(["fit", "--config", str(ROOT / "conf" / "pretrain" / "point_robot.yaml"), *args,
                 "--model.init_args.lr", "1e30"])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("promptdiff: error")]
    assert code == 2 and len(errors) == 1 and re.search(r"train/action_mse is (nan|inf) at step \d", errors[0]), errors
    for ckpt in (tmp_path / "ckpt").glob("*.ckpt"):  # whatever was saved before the stop is finite
        assert PromptDTPretrain.load_policy(str(ckpt)).hparams.family == "point_robot"
