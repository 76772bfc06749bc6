"""Prompt-tuning baselines on the shipped point_robot PLM and few-shot data: the prompt forms the PLM
accepts, what each tuner changes (and what it must leave alone), that tuning lowers the few-shot
action loss, the per-task rollout path against the batched one, and every conf/baselines/ config
shrunk through `promptdiff fit`."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from promptdiff.cli.main import main
from promptdiff.data.fewshot import FewShotDataModule
from promptdiff.data.hdf5_format import content_digest
from promptdiff.envs import get_family
from promptdiff.methods import Adaptor, PromptDTFinetune, PromptDTPretrain, PromptTuningDT, SoftPrompt
from promptdiff.methods.frozen_plm import load_frozen_plm
from promptdiff.models import Prompt, PromptTokens

from test_pretrain import ROOT

FAMILY = "point_robot"
FAM = get_family(FAMILY)
PLM_PATH = ROOT / "datasets" / FAMILY / "plm.ckpt"
PLM_FULL = ROOT / "datasets" / FAMILY / "plm_full.ckpt"
EVAL_ONLY = {"prompt_dt": "PromptDTExpert", "mt_orl": "MTORL", "full_data": "FullDataBound"}  # config -> class
CONFIGS = sorted((ROOT / "conf" / "baselines").glob("*.yaml"))

# `main([...])` inside pytest: LightningCLI notes that pytest's own argv is ignored
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plm():
    """The shipped point_robot PLM (its own copy: the tests only read it)."""
    return load_frozen_plm(str(PLM_PATH), FAMILY, 20, 5).model.eval()


@pytest.fixture(scope="module")
def plm_state(plm):
    """The shipped PLM's weights as stored in the checkpoint: what every frozen PLM must keep."""
    return {k: v.clone() for k, v in plm.state_dict().items()}


def random_segments(B=6, K=20, seed=0, pad_rows=3, pad=7):
    """Random K-step segments in PLM units; the last `pad_rows` rows are left padded by `pad` steps."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(B, K, FAM.obs_dim, generator=g)
    actions = torch.rand(B, K, FAM.act_dim, generator=g) * 2 - 1
    rtg = -torch.rand(B, K, 1, generator=g) * 2
    timesteps = torch.randint(0, FAM.horizon, (B, K), generator=g)
    mask = torch.ones(B, K)
    mask[B - pad_rows:, :pad] = 0
    return states * mask[..., None], actions, rtg, timesteps, mask


def random_prompt(P=1, L=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(P, L)
    mask[:, :1] = 0  # one padded step: the mask must travel with the prompt
    return Prompt(torch.randn(P, L, FAM.obs_dim, generator=g) * mask[..., None],
                  torch.rand(P, L, FAM.act_dim, generator=g) * 2 - 1, -torch.rand(P, L, 1, generator=g),
                  torch.randint(0, FAM.horizon, (P, L), generator=g), mask)  # fmt: skip


def fit(module, dm, steps: int, callbacks=()):
    L.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks)).fit(module, dm)  # fmt: skip


def assert_plm_unchanged(module, plm_state):
    for k, v in module.plm.state_dict().items():
        assert torch.equal(v, plm_state[k]), f"frozen PLM weight {k} changed"
    assert all(p.grad is None for p in module.plm.parameters()), "the frozen PLM received gradients"


def expected_tuned_parameters(cls_name: str, init_args: dict, plm) -> int:
    """The tuned-parameter count of each method, worked out from the PLM's shape (not from the module)."""
    n, L = len(FAM.test_tasks), 5
    width, layers = plm.embed_ln.normalized_shape[0], len(plm.blocks)
    if cls_name in EVAL_ONLY.values():
        return 0
    if cls_name == "PromptDTFinetune":
        return n * sum(p.numel() for p in plm.parameters())
    if cls_name == "SoftPrompt":
        return n * 3 * L * width
    if cls_name == "Adaptor":
        b = init_args.get("bottleneck", 16)
        return n * layers * ((width * b + b) + (b * width + width))
    if cls_name == "PromptTuningDT":
        return n * L * (FAM.obs_dim + FAM.act_dim)
    raise AssertionError(f"no expected count for {cls_name}")


# -- the prompt forms the PLM accepts --------------------------------------------------------------
@torch.no_grad()
def test_empty_prompt_is_no_prompt(plm):
    s, a, r, ts, mask = random_segments()
    none = plm(s, a, r, ts, mask, prompt=None)
    empty = plm(s, a, r, ts, mask, prompt=Prompt.empty(FAM.obs_dim, FAM.act_dim, 5))
    real = mask.bool()
    # Every real step gets the same action. Not bitwise: the attention sums over 15 more (zero-weight)
    # keys, which regroups the float32 reduction (differences ~1e-8). Padded steps are free to differ
    # (a padded query sees no real key and attends uniformly; every loss masks it out).
    torch.testing.assert_close(empty[real], none[real], rtol=0, atol=1e-6)
    # ... while a real prompt does change them, far beyond that tolerance: the check can fail
    prompted = plm(s, a, r, ts, mask, prompt=random_prompt())
    assert (prompted[real] - none[real]).abs().max() > 1e-3


@torch.no_grad()
def test_prompt_tokens_from_embed_prompt_act_like_the_prompt(plm):
    s, a, r, ts, mask = random_segments(seed=2)
    B = s.shape[0]
    for P in (1, B):  # one shared prompt, and one prompt per sample
        p = random_prompt(P=P, seed=3 + P)
        tokens = plm.embed_prompt(p)
        assert isinstance(tokens, PromptTokens) and tokens.tokens.shape == (P, 15, plm.embed_ln.normalized_shape[0])
        assert torch.equal(tokens.mask, p.mask)
        out = plm(s, a, r, ts, mask, prompt=p)
        # the forward embeds a Prompt after broadcasting it to the batch: the same tokens give the same output
        assert torch.equal(plm(s, a, r, ts, mask, prompt=plm.embed_prompt(p.expand(B))), out)
        # tokens embedded once for a shared prompt (P = 1) differ only by the float32 rounding of a
        # (1, .) instead of a (B, .) matrix product (~1e-8)
        torch.testing.assert_close(plm(s, a, r, ts, mask, prompt=tokens), out, rtol=0, atol=1e-6)
    assert (out - plm(s, a, r, ts, mask, prompt=tokens.index([0]))).abs().max() > 1e-3  # another prompt: it can fail


# -- what each gradient tuner changes --------------------------------------------------------------
def _segment_inputs(module, batch, j):
    g = {k: v[j] for k, v in module.normalised_segments(batch).items()}
    return g, (g["seg_states"], g["seg_actions"], g["seg_returns_to_go"], g["seg_timesteps"], g["seg_mask"])


@pytest.mark.parametrize("cls, lr", [(Adaptor, 1e-3), (SoftPrompt, 1e-3), (PromptDTFinetune, 1e-5)])
def test_gradient_tuner_keeps_plm_and_lowers_fewshot_loss(cls, lr, plm, plm_state):
    torch.manual_seed(0)
    dm = FewShotDataModule(FAMILY, batch_size=16, seed=0)
    module = cls(FAMILY, lr=lr)
    fit(module, dm, 0)  # setup only: the expert prompts are filled in, nothing is tuned
    tasks = module.tasks
    batch = dm.draw(np.random.default_rng(999))  # a fixed few-shot batch, not one the training draws
    expert = module.expert_prompts(dm, tasks, module.hparams.prompt_seed)

    module.eval()
    with torch.no_grad():
        before = module.loss(batch).item()
        if cls is Adaptor:  # W_up = 0: the adapters are the identity, the PLM's output is untouched
            for j, t in enumerate(tasks):
                _, x = _segment_inputs(module, batch, j)
                assert torch.equal(module.plm(*x, prompt=expert[t], adapters=module.adapters[j]),
                                   plm(*x, prompt=expert[t]))  # fmt: skip
        if cls is SoftPrompt:  # the tokens start as the PLM's embedding of each task's expert prompt
            assert torch.equal(module.tokens, plm.embed_prompt(Prompt.cat([expert[t] for t in tasks])).tokens)
    tuned_before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("plm.")}

    module.train()  # a fresh module is in training mode; the loss check above put it in eval
    fit(module, dm, 10)
    assert_plm_unchanged(module, plm_state)
    module.eval()
    with torch.no_grad():
        after = module.loss(batch).item()
    assert after < 0.99 * before, f"{cls.__name__}: few-shot action loss {before:.3g} -> {after:.3g}"

    tuned = dict(module.state_dict())
    if cls is Adaptor:
        for j in range(len(tasks)):
            assert any(not torch.equal(tuned[k], v) for k, v in tuned_before.items() if k.startswith(f"adapters.{j}.")), \
                f"the adapters of task {tasks[j]} did not change"  # fmt: skip
        with torch.no_grad():
            _, x = _segment_inputs(module, batch, 0)
            assert not torch.equal(module.plm(*x, prompt=expert[tasks[0]], adapters=module.adapters[0]),
                                   plm(*x, prompt=expert[tasks[0]]))  # fmt: skip
    if cls is SoftPrompt:
        for j in range(len(tasks)):
            assert not torch.equal(tuned["tokens"][j], tuned_before["tokens"][j]), f"task {tasks[j]}'s tokens did not move"
        # only the tokens are tuned: the start prompt (mask etc.) is the expert prompt still
        assert torch.equal(module.prompt_mask, tuned_before["prompt_mask"])
    if cls is PromptDTFinetune:
        for j in range(len(tasks)):
            own = module.models[j].state_dict()
            assert any(not torch.equal(v, plm_state[k]) for k, v in own.items()), f"task {tasks[j]}'s copy did not change"
            assert own.keys() == plm_state.keys()


def test_finetune_copies_train_with_dropout_as_in_pretraining():
    modes = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, module, *args):
            modes.append((module.plm.training, [m.training for m in module.models]))

    fit(PromptDTFinetune(FAMILY, lr=1e-5), FewShotDataModule(FAMILY, batch_size=2), 1, callbacks=[Watch()])
    assert modes and all(not plm_mode for plm_mode, _ in modes), "the frozen PLM was put in training mode"
    assert all(all(copies) for _, copies in modes), "the fine-tuned copies trained in eval mode (no dropout)"


def test_prompt_tuning_dt_moves_only_states_and_actions(plm_state):
    dm = FewShotDataModule(FAMILY, batch_size=4, seed=0)
    module = PromptTuningDT(FAMILY, queries=4, prompt_seed=1, rank_seed=2)
    fit(module, dm, 2)
    assert_plm_unchanged(module, plm_state)
    start = module.expert_prompts(dm, module.tasks, seed=1)  # the prompt tuning started from
    tuned = module.tuned_prompts()
    for j, t in enumerate(module.tasks):
        p, s = tuned[t], start[t]
        assert isinstance(p, Prompt)
        assert not torch.equal(p.states, s.states), f"task {t}: the prompt's states did not move"
        assert not torch.equal(p.actions, s.actions), f"task {t}: the prompt's actions did not move"
        assert torch.equal(p.returns_to_go, s.returns_to_go) and torch.equal(p.timesteps, s.timesteps)
        assert torch.equal(p.mask, s.mask)
        assert torch.equal(p.states * (1 - p.mask[..., None]), torch.zeros_like(p.states)), "padded states moved"
    L = module.hparams.prompt_length
    assert module.num_tuned_parameters == L * (FAM.obs_dim + FAM.act_dim) * len(FAM.test_tasks)


# -- through `promptdiff fit` ----------------------------------------------------------------------
def fit_args(tmp_path, final_json, episodes: int, seed: int = 0, prompt_seed: int = 0, primary_only=False):
    callback = {"class_path": "promptdiff.callbacks.RolloutCallback",
                "init_args": {"every_n_val_epochs": 1000, "episodes": episodes, "seed": seed, "prompt_seed": prompt_seed,
                              "final_table": True, "final_json": str(final_json), "primary_only": primary_only}}  # fmt: skip
    return ["--data.init_args.family", FAMILY, "--trainer.accelerator", "cpu", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.callbacks", json.dumps([callback])]  # fmt: skip


def test_per_task_rollout_equals_batched_evaluation(tmp_path):
    """The Adaptor at 0 steps is the PLM itself; evaluated task by task (policy_per_task) it must give
    the returns of PromptDTExpert's one batched evaluation with the same seeds and prompts (to float32 precision)."""
    conf = ROOT / "conf" / "baselines"
    seeds = dict(seed=3, prompt_seed=2)
    assert main(["fit", "--config", str(conf / "prompt_dt.yaml"), "--trainer.max_steps", "0",
                 *fit_args(tmp_path, tmp_path / "batched.json", 2, **seeds)]) == 0  # fmt: skip
    assert main(["fit", "--config", str(conf / "adaptor.yaml"), "--trainer.max_steps", "0",
                 "--model.init_args.prompt_seed", "2", *fit_args(tmp_path, tmp_path / "per_task.json", 2, **seeds)]) == 0  # fmt: skip
    batched = json.loads((tmp_path / "batched.json").read_text())
    per_task = json.loads((tmp_path / "per_task.json").read_text())
    assert (batched["method"], per_task["method"]) == ("PromptDTExpert", "Adaptor") and Adaptor.policy_per_task
    assert batched["episodes"] == per_task["episodes"] == 2
    a, b = batched["sets"]["expert"], per_task["sets"]["tuned"]
    assert set(a["tasks"]) == set(b["tasks"]) == {str(t) for t in FAM.test_tasks}
    for t in a["tasks"]:
        # the same episodes; the PLM's float32 matmuls round differently for 2 and 10 environments per call when
        # several threads split them, so returns agree to float32 precision, not always bit for bit
        ta, tb = a["tasks"][t], b["tasks"][t]
        assert ta["lengths"] == tb["lengths"] and ta.get("successes") == tb.get("successes"), f"task {t}"
        np.testing.assert_allclose(ta["returns"], tb["returns"], rtol=1e-5, err_msg=f"task {t}")
    assert len({v["return_mean"] for v in a["tasks"].values()}) > 1, "every task returned the same: nothing compared"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_baseline_config_fits_and_writes_final_json(config, tmp_path, plm):
    init_args = {}  # the methods' defaults (bottleneck 16)
    extra = []
    if config.stem == "full_data":
        if not PLM_FULL.is_file():
            pytest.skip(f"{PLM_FULL.relative_to(ROOT)} does not exist yet: pre-train it with "
                        f"`promptdiff fit --config conf/pretrain/{FAMILY}.yaml --data.init_args.include_test_tasks true`")  # fmt: skip
        extra = ["--data.init_args.root", str(ROOT / "datasets")]  # the full-data PLM is found under the root
    steps = 0 if config.stem in EVAL_ONLY else 2
    if steps:
        extra += ["--trainer.val_check_interval", str(steps)]
    if config.stem == "prompt_tuning_dt":
        extra += ["--model.init_args.queries", "4"]
    out = tmp_path / "final.json"
    assert main(["fit", "--config", str(config), "--trainer.max_steps", str(steps), "--data.init_args.batch_size", "4",
                 "--data.init_args.val_batches", "1", *fit_args(tmp_path, out, 1), *extra]) == 0  # fmt: skip

    summary = json.loads(out.read_text())
    cls_name = summary["method"]
    assert cls_name == EVAL_ONLY.get(config.stem, cls_name) and summary["family"] == FAMILY and summary["episodes"] == 1
    expected_primary = {"PromptDTExpert": "expert", "FullDataBound": "expert", "MTORL": "no_prompt"}.get(cls_name, "tuned")
    assert summary["primary"] == expected_primary and summary["primary"] in summary["sets"]
    primary = summary["sets"][summary["primary"]]
    assert set(primary["tasks"]) == {str(t) for t in FAM.test_tasks}
    assert np.isfinite(primary["return_mean"]) and "score_mean" in primary
    assert summary["tuned_parameters"] == expected_tuned_parameters(cls_name, init_args, plm)
    # the data the run read, by content (what the benchmark compares to tell a cell made from other data)
    root, files = Path(summary["data"]["root"]), summary["data"]["files"]
    assert f"{FAM.dataset_family}/prompt-expert.h5" in files
    assert all(digest == content_digest(root / name) for name, digest in files.items())


def test_prompt_quality_changes_the_starting_prompt_not_the_tuning_data(tmp_path):
    # the prompt-initialisation study: tune on expert data, start from (or condition on) a random prompt
    from promptdiff.production.collect import collect, default_collect_config

    fam = get_family(FAMILY)
    cfg = default_collect_config(FAMILY, root=str(tmp_path), tasks=list(fam.test_tasks), episodes_per_task=1,
                                 prompt_episodes=2, card=False, workers=1)
    cfg.qualities = ["expert", "random"]
    collect(cfg)
    plain = FewShotDataModule(FAMILY, root=str(tmp_path), batch_size=4, seed=0)
    mixed = FewShotDataModule(FAMILY, root=str(tmp_path), batch_size=4, seed=0, prompt_quality="random")
    worse = FewShotDataModule(FAMILY, root=str(tmp_path), batch_size=4, seed=0, quality="random")
    tasks = list(fam.test_tasks)
    start, start_random = plain.tail_prompts(tasks, seed=1), mixed.tail_prompts(tasks, seed=1)
    for t in tasks:  # the starting prompt is the random pool's, the same one quality="random" gives
        assert not torch.equal(start[t].actions, start_random[t].actions)
        torch.testing.assert_close(start_random[t].actions, worse.tail_prompts(tasks, seed=1)[t].actions)
    a, b = plain.draw(np.random.default_rng(3)), mixed.draw(np.random.default_rng(3))
    for key in ("window", "segment"):  # the tuning data stays the expert data
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value)
    with pytest.raises(ValueError, match="prompt_quality must be one of"):
        FewShotDataModule(FAMILY, root=str(tmp_path), prompt_quality="expret")


def test_cli_refuses_a_plm_of_another_family_of_the_same_size(tmp_path, capsys):
    """Under `promptdiff fit` the PLM is checked against its OWN hyper-parameters (not the method's, which
    LightningCLI hands to every module built while the method is): cheetah_dir's PLM has cheetah_vel's sizes,
    yet it is refused by name, in one line (exit 2), before any data is read."""
    assert PromptDTPretrain.load_policy(str(ROOT / "datasets" / "cheetah_dir" / "plm.ckpt")).model.obs_dim == \
        PromptDTPretrain.load_policy(str(ROOT / "datasets" / "cheetah_vel" / "plm.ckpt")).model.obs_dim  # fmt: skip
    code = main(["fit", "--config", str(ROOT / "conf" / "baselines" / "prompt_dt.yaml"), "--trainer.max_steps", "0",
                 "--data.init_args.family", "cheetah_vel", "--data.init_args.root", str(tmp_path),
                 "--model.init_args.plm", str(ROOT / "datasets" / "cheetah_dir" / "plm.ckpt"),
                 "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("promptdiff: error")]
    assert code == 2 and len(errors) == 1, errors
    assert "pre-trained on family 'cheetah_dir', not 'cheetah_vel'" in errors[0]
    assert not any(tmp_path.iterdir()), "nothing is written before the model is built"


@pytest.mark.parametrize("layout", [["--trainer.devices", "2"], ["--trainer.num_nodes", "2"]], ids=["devices", "nodes"])
def test_prompt_tuning_dt_refuses_more_than_one_process(layout, tmp_path, capsys):
    """Prompt-Tuning DT's rank-optimiser step is no gradient DDP could average: `fit` over 2 devices or 2 nodes
    stops in one line (exit 2) before any process is started, while a gradient method passes the same check."""
    out = tmp_path / "final.json"
    code = main(["fit", "--config", str(ROOT / "conf" / "baselines" / "prompt_tuning_dt.yaml"), "--trainer.max_steps",
                 "2", "--trainer.strategy", "ddp", *layout, *fit_args(tmp_path, out, 1)])  # fmt: skip
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("promptdiff: error")]
    assert code == 2 and len(errors) == 1, errors
    assert "PromptTuningDT runs in one process only" in errors[0] and "2 processes" in errors[0]
    assert not out.exists()
    module = PromptTuningDT(FAMILY)
    module.check_processes(1)  # one process is fine
    SoftPrompt(FAMILY).check_processes(2)  # a gradient method under DDP is fine
