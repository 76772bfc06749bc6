"""Prompt Diffuser: shrunk real configs through `promptdiff fit`, the frozen PLM, the prompt units,
stage-1 initialisation, best-of-n, and the failure modes (NaN loss, missing or foreign PLM)."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from conftest import link_shipped_plms, resolved_config
from promptdiff.cli.main import main
from promptdiff.data.datamodule import PromptDTDataModule
from promptdiff.data.fewshot import FewShotDataModule
from promptdiff.envs import get_family
from promptdiff.methods import PromptDiffuser
from promptdiff.methods.prompt_diffuser import NonFiniteLossError
from promptdiff.models import PromptCodec
from promptdiff.safe_io import load_checkpoint

from test_pretrain import FAMILIES, _scalar_tags, tiny_data

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(denoiser={"class_path": "promptdiff.models.MLPDenoiser", "init_args": {"hidden": 32, "blocks": 1, "time_dim": 16}},
             cond_dim=16, diffusion_steps=10)
SHIPPED_STAGE1 = sorted((ROOT / "datasets").glob("*/diffuser_stage1.ckpt"))


def shrink_args(tmp_path: Path, steps: int = 2, rollouts: bool = True) -> list[str]:
    callbacks = [{"class_path": "promptdiff.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}},
                 {"class_path": "promptdiff.callbacks.DenoisingChainCallback", "init_args": {"dims": 3, "every_n_val_epochs": 1}}]  # fmt: skip
    if rollouts:
        callbacks.append({"class_path": "promptdiff.callbacks.RolloutCallback",
                          "init_args": {"every_n_val_epochs": 1, "episodes": 1, "final_table": True,
                                        "card_root": str(tmp_path / "data")}})  # fmt: skip
    args = ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps),
            "--trainer.accelerator", "cpu", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--trainer.callbacks", json.dumps(callbacks), "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1", "--data.init_args.root", str(tmp_path / "data"),
            "--data.init_args.batch_size", "2", "--data.init_args.val_batches", "1"]  # fmt: skip
    for key, value in SMALL.items():
        args += [f"--model.init_args.{key}", str(value)]
    return args


def _image_tags(event_file: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_file))
    acc.Reload()
    return set(acc.Tags()["images"])


def _final_scalars(runs: Path) -> dict[str, tuple[int, float]]:
    """tag -> (step, value) of every rollout_final/ scalar in the run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for event_file in runs.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("rollout_final/"):
                (event,) = acc.Scalars(tag)
                out[tag] = (event.step, event.value)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_shrunk_config_fits_and_compares_prompts(family, tmp_path, capsys):
    tiny_data(family, tmp_path / "data")
    config = ROOT / "conf" / f"{family}.yaml"
    cfg = resolved_config(config)
    assert cfg["data"]["init_args"]["family"] == family and cfg["model"]["init_args"]["plm"] is None  # derived from root
    assert main(["fit", "--config", str(config), *shrink_args(tmp_path)]) == 0

    event = next((tmp_path / "runs").rglob("events.out.tfevents.*"))
    tags = _scalar_tags(event)
    fam = get_family(family)
    assert {"train/L_DM", "train/L_P", "train/grad_cosine", "val/L_DM", "val/L_P"} <= tags
    for which in ("generated", "expert"):
        assert f"rollout/return_mean/{which}" in tags
        assert {f"rollout/return_task{t}/{which}" for t in fam.test_tasks} <= tags
    assert "figures/denoising_chain" in _image_tags(event)

    table = capsys.readouterr().out
    assert "generated prompt" in table and "expert prompt" in table
    final = json.loads(next((tmp_path / "runs").rglob("rollout_final.json")).read_text())
    assert set(final["sets"]) == {"generated", "expert"}
    assert set(final["sets"]["generated"]["tasks"]) == {str(t) for t in fam.test_tasks}
    # the final evaluation is in TensorBoard too, with the JSON's numbers, at the last step
    logged = _final_scalars(tmp_path / "runs")
    for which in ("generated", "expert"):
        assert logged[f"rollout_final/return_mean/{which}"] == (2, pytest.approx(final["sets"][which]["return_mean"]))
        for t in fam.test_tasks:
            value = final["sets"][which]["tasks"][str(t)]["return_mean"]
            assert logged[f"rollout_final/return_task{t}/{which}"] == (2, pytest.approx(value))

    module = PromptDiffuser.load_from_checkpoint(str(tmp_path / "ckpt" / "last.ckpt"))
    assert len(module.diffusers) == len(fam.test_tasks)


def test_plm_stays_frozen_and_diffusers_learn(tmp_path):
    torch.manual_seed(0)
    module = PromptDiffuser("point_robot", lr=1e-2, **SMALL)
    plm_before = {k: v.clone() for k, v in module.plm.state_dict().items()}
    diff_before = {k: v.clone() for k, v in module.diffusers.state_dict().items()}
    seen_modes = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen_modes.append(pl_module.plm.training)

    trainer = L.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Watch()])  # fmt: skip
    trainer.fit(module, FewShotDataModule("point_robot", batch_size=4))
    assert seen_modes == [False] * 3, "the frozen PLM was put in training mode (dropout on)"
    for k, v in module.plm.state_dict().items():
        assert torch.equal(v, plm_before[k]), f"frozen PLM weight {k} changed"
    assert all(p.grad is None for p in module.plm.parameters())
    assert any(not torch.equal(v, diff_before[k]) for k, v in module.diffusers.state_dict().items())


def test_expert_prompt_matches_pretraining_prompt_units():
    """The baseline prompt of the few-shot module is exactly the pre-training data module's expert prompt."""
    module = PromptDiffuser("point_robot", **SMALL)
    fewshot = FewShotDataModule("point_robot")
    pretrain_dm = PromptDTDataModule("point_robot")
    tasks = list(module.family.test_tasks)
    ours = module.expert_prompts(fewshot, tasks, seed=1)
    theirs = pretrain_dm.tail_prompts(tasks, seed=1)
    for t in tasks:
        for field in ("states", "actions", "returns_to_go", "timesteps", "mask"):
            torch.testing.assert_close(getattr(ours[t], field), getattr(theirs[t], field), msg=f"task {t} {field}")


def test_codec_round_trip_and_gradient():
    codec = PromptCodec(obs_dim=3, act_dim=2, prompt_length=4)
    s, a, r = torch.randn(6, 4, 3), torch.randn(6, 4, 2), torch.randn(6, 4)
    x0 = codec.encode(s, a, r).requires_grad_(True)
    assert x0.shape == (6, 4 * 6)
    s2, a2, r2 = codec.decode(x0)
    assert torch.equal(s2, s) and torch.equal(a2, a) and torch.equal(r2, r)
    prompt = codec.to_prompt(x0, torch.rand(6, 4), torch.arange(4).expand(6, 4))
    assert prompt.states.shape == (6, 4, 3) and bool(prompt.mask.eq(1).all())
    prompt.states.sum().backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="features"):
        codec.decode(torch.zeros(2, 5))


def test_best_of_n_keeps_the_candidate_with_the_lowest_plm_loss():
    torch.manual_seed(0)
    module = PromptDiffuser("point_robot", best_of_n=4, **SMALL)
    for p in module.diffusers.parameters():  # an untrained x0 model outputs zeros: make candidates differ
        p.data.normal_(0.0, 0.3)
    dm = FewShotDataModule("point_robot", batch_size=8)
    task = dm.tasks[0]
    chosen = module.generate_prompts(dm, [task], seed=0)[task]
    # the same candidates, generated one by one
    tail = dm.tail_prompts([task], 0)[task]
    rtg, ts = tail.returns_to_go[..., 0].expand(4, -1), tail.timesteps.expand(4, -1)
    x0 = module.sample_x0(module.diffuser_for(task), rtg, ts, seed=module.hparams.sample_seed * 100_003)
    candidates = module.codec.to_prompt(x0, rtg, ts)
    batch = dm.draw(np.random.default_rng([0, 0, task]))
    seg = {f"seg_{k}": v[0] for k, v in batch["segment"].items()}
    seg["seg_states"] = module.normalise_states(seg["seg_states"]) * seg["seg_mask"].unsqueeze(-1)
    losses = torch.stack([module.plm_action_loss(candidates.index([i]).expand(8), seg).mean() for i in range(4)])
    assert len(set(losses.tolist())) == 4
    torch.testing.assert_close(chosen.states, candidates.states[int(losses.argmin())][None])


def test_shared_diffuser_pools_the_tasks_few_shot_data():
    """shared=True: one diffuser for every task of the split, trained on their pooled windows. With the
    same weights, its L_DM on a batch is the mean of the per-task diffusers' L_DM (equal windows per task)."""
    torch.manual_seed(0)
    per = PromptDiffuser("point_robot", **SMALL)
    shared = PromptDiffuser("point_robot", shared=True, **SMALL)
    assert len(per.diffusers) == len(per.tasks) > 1 and len(shared.diffusers) == 1
    for p in shared.diffusers.parameters():  # an untrained x0 model outputs zeros: make the loss depend on x0
        p.data.normal_(0.0, 0.3)
    for d in per.diffusers:
        d.load_state_dict(shared.diffusers[0].state_dict())
    assert {id(shared.diffuser_for(t)) for t in shared.tasks} == {id(shared.diffusers[0])}
    dm = FewShotDataModule("point_robot", batch_size=4)
    batch = dm.draw(np.random.default_rng(0))
    T, B = batch["window"]["timesteps"].shape[:2]
    draws = per.diffusion_draws(T, B, (0, 0, 0))
    l_dm_per, _ = per.losses(batch, draws, need_guidance=False)
    l_dm_shared, _ = shared.losses(batch, draws, need_guidance=False)
    assert len(l_dm_per) == T and len(l_dm_shared) == 1
    assert len({round(x, 6) for x in torch.stack(l_dm_per).detach().tolist()}) > 1  # the tasks' losses differ, so the mean is a real check
    torch.testing.assert_close(l_dm_shared[0], torch.stack(l_dm_per).mean())


def test_stage_one_diffuser_initialises_every_task_diffuser(tmp_path):
    family = "point_robot"
    train = tiny_data(family, tmp_path / "data")
    config = ROOT / "conf" / "diffuser_pretrain" / f"{family}.yaml"
    args = shrink_args(tmp_path, rollouts=False) + ["--data.init_args.tasks", str(train)]
    assert main(["fit", "--config", str(config), *args]) == 0
    stage1 = PromptDiffuser.load_from_checkpoint(str(tmp_path / "ckpt" / "last.ckpt"))
    assert stage1.hparams.split == "train" and len(stage1.diffusers) == 1
    tuned = PromptDiffuser(family, init_diffuser=str(tmp_path / "ckpt" / "last.ckpt"), **SMALL)
    assert len(tuned.diffusers) == len(get_family(family).test_tasks)
    for d in tuned.diffusers:
        for (k, v), w in zip(d.state_dict().items(), stage1.diffusers[0].state_dict().values()):
            assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="does not fit"):
        PromptDiffuser(family, init_diffuser=str(tmp_path / "ckpt" / "last.ckpt"), cond_dim=16, diffusion_steps=10,
                       denoiser={"class_path": "promptdiff.models.MLPDenoiser", "init_args": {"hidden": 48, "blocks": 1, "time_dim": 16}})
    # refused before any weight is copied: another family (here one whose PLM is shipped), another prompt length
    with pytest.raises(ValueError, match=r"trained with family 'point_robot', this run has 'cheetah_vel'.*"
                                         r"conf/diffuser_pretrain/cheetah_vel.yaml"):
        PromptDiffuser("cheetah_vel", init_diffuser=str(tmp_path / "ckpt" / "last.ckpt"), **SMALL)
    with pytest.raises(ValueError, match="trained with prompt_length 5, this run has 4"):
        PromptDiffuser(family, init_diffuser=str(tmp_path / "ckpt" / "last.ckpt"), prompt_length=4, **SMALL)
    with pytest.raises(FileNotFoundError, match=r"nope.ckpt not found: make it with `promptdiff fit --config "
                                                r"conf/diffuser_pretrain/point_robot.yaml`"):
        PromptDiffuser(family, init_diffuser=str(tmp_path / "nope.ckpt"), **SMALL)
    # shipped: the diffuser weights and hyper-parameters only, with a record of the run's logged losses
    assert main(["data", "ship-stage1", str(tmp_path / "ckpt" / "last.ckpt"), "--family", family, "--root",
                 str(tmp_path / "ship"), "--run_dir", str(tmp_path / "runs"), "--note", "test run"]) == 0  # fmt: skip
    shipped = tmp_path / "ship" / family / "diffuser_stage1.ckpt"
    slim = load_checkpoint(shipped)
    assert slim["state_dict"] and all(k.startswith("diffusers.0.") for k in slim["state_dict"])
    assert "optimizer_states" not in slim and slim["hyper_parameters"]["family"] == family
    record = json.loads(shipped.with_suffix(".json").read_text())
    assert record["step"] == 2 and record["note"] == "test run" and 0 < record["logged"]["val/L_DM"][-1][0] <= 2
    again = PromptDiffuser(family, init_diffuser=str(shipped), **SMALL)
    for (k, v), w in zip(again.diffusers[0].state_dict().items(), stage1.diffusers[0].state_dict().values()):
        assert torch.equal(v, w), k
    assert main(["data", "ship-stage1", str(tmp_path / "ckpt" / "last.ckpt"), "--family", "cheetah_vel", "--root",
                 str(tmp_path / "ship")]) == 2  # fmt: skip


@pytest.mark.parametrize("ckpt", SHIPPED_STAGE1, ids=[p.parent.name for p in SHIPPED_STAGE1])
def test_shipped_stage_one_diffuser_drives_the_zero_shot_prompt(ckpt):
    """Each family's shipped stage-1 diffuser fits conf/<family>.yaml's diffuser, and the zero-shot prompt
    (condition "target", Table 1's prompt_diffuser_zero_shot) is generated from the target return alone: no
    few-shot data is touched."""
    family = ckpt.parent.name
    cfg = resolved_config(ROOT / "conf" / f"{family}.yaml")
    hp = {k: v for k, v in cfg["model"]["init_args"].items() if v is not None}
    hp.update(family=cfg["data"]["init_args"]["family"], root=str(ROOT / "datasets"), init_diffuser=str(ckpt),
              condition="target")  # fmt: skip
    module = PromptDiffuser(**hp)
    shipped = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    for d in module.diffusers:
        for k, v in d.state_dict().items():
            assert torch.equal(v, shipped[f"diffusers.0.{k}"]), k

    class NoData:  # any access to the target tasks' data fails the test
        def __getattr__(self, name):
            raise AssertionError(f"zero-shot generation read the data module's {name}")

    tasks = list(get_family(family).test_tasks)
    prompts = module.generate_prompts(NoData(), tasks, seed=0)
    rtg, ts = module.target_condition()
    fam = module.family
    assert ts[0].tolist() == list(range(fam.horizon - 5, fam.horizon))
    assert rtg[0, -1] == pytest.approx(fam.target_return / fam.horizon / fam.rtg_scale)
    if fam.target_return > 0:  # returns-to-go fall towards the end of the episode
        assert torch.all(rtg[0, 1:] < rtg[0, :-1])
    for task, prompt in prompts.items():
        torch.testing.assert_close(prompt.returns_to_go[0, :, 0], rtg[0])
        assert torch.equal(prompt.timesteps[0], ts[0]) and torch.isfinite(prompt.states).all()
    # one diffuser, one y: the tasks' prompts differ only through their sampling noise
    assert not torch.equal(prompts[tasks[0]].states, prompts[tasks[1]].states)


def test_nan_loss_stops_with_step_and_loss_named(tmp_path, monkeypatch):
    module = PromptDiffuser("point_robot", **SMALL)
    real = module.diffusion.training_terms

    def poisoned(*args, **kwargs):
        loss, x0_hat = real(*args, **kwargs)
        return loss * float("nan"), x0_hat

    monkeypatch.setattr(module.diffusion, "training_terms", poisoned)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, callbacks=[ckpt],
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"L_DM is nan at step 0"):
        trainer.fit(module, FewShotDataModule("point_robot", batch_size=2))
    assert not list((tmp_path / "ckpt").glob("*.ckpt")), "a checkpoint was written after the NaN"


def test_missing_or_foreign_plm_fails_before_training(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        PromptDiffuser("point_robot", plm=str(tmp_path / "nowhere.ckpt"))
    with pytest.raises(ValueError, match="'point_robot', not 'cheetah_dir'"):
        PromptDiffuser("cheetah_dir", plm=str(ROOT / "datasets" / "point_robot" / "plm.ckpt"))
    with pytest.raises(ValueError, match="context_length 20, the config asks for 10"):
        PromptDiffuser("point_robot", context_length=10)
    # the prompt length may differ from pre-training's (no positional embedding): a valid, shorter prompt
    assert PromptDiffuser("point_robot", prompt_length=3).codec.L == 3
    # through the CLI: the run stops before building anything, naming the option and the file (exit 2)
    assert main(["fit", "--config", str(ROOT / "conf" / "point_robot.yaml"), "--model.init_args.plm",
                 str(tmp_path / "nowhere.ckpt"), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]) == 2  # fmt: skip
    assert "--model.init_args.plm " + str(tmp_path / "nowhere.ckpt") + ": no such file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_fewshot_windows_cover_whole_trajectories_and_ranks_differ():
    dm = FewShotDataModule("point_robot", batch_size=64)
    dm.setup()
    b = dm.draw(np.random.default_rng(0))
    ts = b["window"]["timesteps"]
    assert ts.shape == (len(dm.tasks), 64, 5)
    assert int(ts.min()) == 0 or int(ts[:, :, 0].min()) < 5, "windows only come from the tails"
    assert bool((ts[..., 1:] - ts[..., :-1]).eq(1).all()), "a window is not L consecutive steps"
    b2 = dm.draw(np.random.default_rng(0))
    assert torch.equal(ts, b2["window"]["timesteps"])
    b3 = dm.draw(np.random.default_rng([0, 1, 0]))
    assert not torch.equal(ts, b3["window"]["timesteps"])
    with pytest.raises(ValueError, match="prompt pool"):
        FewShotDataModule("point_robot", split="test", source="train")


def test_diffusion_draws_are_keyed_by_seed_rank_and_step():
    """The method draws the diffusion loss's randomness itself, from (seed, stage, rank, step): the same key gives
    the same draws (a resumed run continues identically), another rank, step or seed other draws."""
    a, b = PromptDiffuser("point_robot", seed=3, **SMALL), PromptDiffuser("point_robot", seed=4, **SMALL)
    d = a.diffusion_draws(5, 4, (0, 0, 7))
    assert d["noise"].shape == (5, 4, a.codec.x_dim) and d["t_uniform"].shape == d["drop_uniform"].shape == (5, 4)
    assert all(torch.equal(v, a.diffusion_draws(5, 4, (0, 0, 7))[k]) for k, v in d.items())
    for other in (a.diffusion_draws(5, 4, (0, 1, 7)), a.diffusion_draws(5, 4, (0, 0, 8)), b.diffusion_draws(5, 4, (0, 0, 7))):
        assert not torch.equal(d["noise"], other["noise"])


def test_promptdiff_test_evaluates_a_checkpoint(tmp_path):
    tiny_data("point_robot", tmp_path / "data")
    config = str(ROOT / "conf" / "point_robot.yaml")
    assert main(["fit", "--config", config, *shrink_args(tmp_path, rollouts=False)]) == 0
    callbacks = json.dumps([{"class_path": "promptdiff.callbacks.RolloutCallback",
                             "init_args": {"episodes": 2, "card_root": str(tmp_path / "data")}}])  # fmt: skip
    args = [a for a in shrink_args(tmp_path, rollouts=False)]
    args[args.index("--trainer.callbacks") + 1] = callbacks
    assert main(["test", "--config", config, *args, "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt")]) == 0
    summary = json.loads(next((tmp_path / "runs").rglob("rollout_test.json")).read_text())
    assert set(summary["sets"]) == {"generated", "expert"} and summary["episodes"] == 2
    assert len(summary["sets"]["generated"]["tasks"]) == len(get_family("point_robot").test_tasks)


# -- validation tasks: the few-shot protocol on held-out training tasks ------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_val_tasks_are_held_out_training_tasks(family):
    fam = get_family(family)
    val = fam.val_tasks
    held = [t for t in fam.train_tasks if t not in fam.test_tasks]
    assert set(val) <= set(held) and not set(val) & set(fam.test_tasks)
    assert len(set(val)) == len(val) == min(len(fam.test_tasks), len(held))
    if val:  # spread over the held-out training tasks, not bunched at one end
        idx = [held.index(t) for t in val]
        assert idx == sorted(idx) and idx[0] < len(held) // len(val) and idx[-1] >= len(held) - len(held) // len(val)
        assert FewShotDataModule(family, split="val").tasks == list(val)
        assert FewShotDataModule(family, split="val", tasks=[held[0]]).tasks == [held[0]]
        with pytest.raises(ValueError, match=rf"tasks \[{fam.test_tasks[0]}\] are not val tasks of {family}"):
            FewShotDataModule(family, split="val", tasks=[fam.test_tasks[0]])
        with pytest.raises(ValueError, match="source 'train' reads the val tasks' full data"):
            FewShotDataModule(family, split="val", source="train")
    else:  # cheetah_dir trains and tests on both of its tasks: nothing is left to validate on
        with pytest.raises(ValueError, match=f"{family} has no training task outside its test tasks"):
            FewShotDataModule(family, split="val")


def test_val_split_tunes_and_evaluates_held_out_training_tasks(tmp_path):
    """PD and the Prompt-DT reference on `split: val` tune and roll out on the validation tasks only."""
    from promptdiff.production.collect import collect, default_collect_config

    family = "point_robot"
    fam = get_family(family)
    val = list(fam.val_tasks)
    collect(default_collect_config(family, root=str(tmp_path / "data"), tasks=val, episodes_per_task=2,
                                   prompt_episodes=2, card=False, workers=1))  # fmt: skip
    link_shipped_plms(tmp_path / "data", family)
    split = ["--data.init_args.split", "val"]  # the model takes it from the data module (linked)
    assert main(["fit", "--config", str(ROOT / "conf" / f"{family}.yaml"), *shrink_args(tmp_path), *split]) == 0
    final = json.loads(next((tmp_path / "runs").rglob("rollout_final.json")).read_text())
    for which in ("generated", "expert"):
        assert set(final["sets"][which]["tasks"]) == {str(t) for t in val}
    tags = _scalar_tags(next((tmp_path / "runs").rglob("events.out.tfevents.*")))
    assert {f"rollout/return_task{t}/generated" for t in val} <= tags
    assert not any(f"rollout/return_task{t}/" in tag for t in fam.test_tasks for tag in tags)
    module = PromptDiffuser.load_from_checkpoint(str(tmp_path / "ckpt" / "last.ckpt"))
    assert module.tasks == val and len(module.diffusers) == len(val)

    out = tmp_path / "prompt_dt_val.json"
    callback = {"class_path": "promptdiff.callbacks.RolloutCallback",
                "init_args": {"episodes": 1, "final_table": True, "primary_only": True, "final_json": str(out)}}
    assert main(["fit", "--config", str(ROOT / "conf" / "baselines" / "prompt_dt.yaml"), "--trainer.max_steps", "0",
                 "--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.default_root_dir",
                 str(tmp_path), "--trainer.accelerator", "cpu", "--trainer.callbacks", json.dumps([callback]),
                 "--data.init_args.family", family, "--data.init_args.root", str(tmp_path / "data"), *split]) == 0  # fmt: skip
    assert set(json.loads(out.read_text())["sets"]["expert"]["tasks"]) == {str(t) for t in val}




@pytest.mark.parametrize("ckpt", SHIPPED_STAGE1, ids=[p.parent.name for p in SHIPPED_STAGE1])
def test_every_shipped_stage_one_diffuser_fits_its_family_config(ckpt):
    """Each shipped stage-1 diffuser initialises the diffusers of its family's own config (conf/<family>.yaml),
    has finite weights and a record that names its step."""
    family = ckpt.parent.name
    cfg = resolved_config(ROOT / "conf" / f"{family}.yaml")
    hp = {k: v for k, v in cfg["model"]["init_args"].items() if v is not None}
    hp.update(family=family, root=str(ROOT / "datasets"), init_diffuser=str(ckpt))
    module = PromptDiffuser(**hp)
    weights = load_checkpoint(ckpt)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values())
    for k, v in module.diffusers[-1].state_dict().items():
        assert torch.equal(v, weights[f"diffusers.0.{k}"]), k
    record = json.loads(ckpt.with_suffix(".json").read_text())
    assert record["family"] == family and record.get("step", record.get("training", {}).get("steps")) >= 1000
