"""The expert policies shipped in datasets/ load, fit their family, and still perform."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from promptdiff.production.collect import default_collect_config, rollout_batch
from promptdiff.production.experts import LearnedExpert
from promptdiff.rollout.evaluator import migrate_result
from promptdiff.production.expert_policy import load_expert_actor
from promptdiff.envs import get_family

from test_collect import ROOT

# One test task per learned family and the per-task floor its quality bar sets.
FLOORS = {"ant_dir": (23, 250.0), "cheetah_vel": (15, -70.0), "cheetah_dir": (1, 900.0)}


@pytest.mark.parametrize("family", sorted(FLOORS))
def test_shipped_expert_meets_its_per_task_floor(family):
    """A deterministic rollout of the shipped actor on one test task stays above the bar's floor."""
    path = ROOT / default_collect_config(family).expert_policy
    assert path.is_file(), f"{path} is not shipped"
    fam = get_family(family)
    actor = load_expert_actor(path)
    extra = 2 if family == "ant_dir" else 1
    assert actor.body[0].in_features == fam.obs_dim + extra
    assert actor.mean.out_features == fam.act_dim
    task, floor = FLOORS[family]
    trajs = rollout_batch(fam, [task, task], [11, 12], LearnedExpert(fam, path), np.random.default_rng(0))
    assert min(t.episode_return for t in trajs) >= floor


@pytest.mark.parametrize("family", ["point_robot", "cheetah_dir", "cheetah_vel", "ant_dir", "ml1_reach", "ml1_pick_place"])
def test_dataset_card_is_consistent(family):
    path = ROOT / "datasets" / family / "card.json"
    assert path.is_file(), f"{path} is not shipped"
    card = json.loads(path.read_text())
    fam = get_family(family)
    assert card["family"] == family
    recorded = {k: v for k, v in card["collection_config"].items() if k not in ("overwrite", "roles")}
    assert recorded == {k: v for k, v in asdict(default_collect_config(family)).items() if k not in ("overwrite", "roles")}
    # the verdicts the card records follow from its own per-task numbers and the family's quality bar
    rows = {int(t): r for t, r in card["tasks"].items()}
    for source in ("expert", "prompt"):
        verdict = fam.quality_bar.met({t: r[f"{source}_return"] for t, r in rows.items()},
                                      {t: r[f"{source}_success"] for t, r in rows.items()})  # fmt: skip
        assert card["summary"][f"{'train' if source == 'expert' else 'prompt'}_meets_bar"] == verdict
    assert sorted(map(int, card["tasks"])) == list(range(fam.num_tasks))
    for task, row in card["tasks"].items():
        assert row["split"] == fam.split_of(int(task))
        assert row["expert_return"] > row["random_return"], f"task {task}: expert not better than random"


PLM_FAMILIES = ["point_robot", "cheetah_dir"]  # families whose PLM is shipped so far


@pytest.mark.parametrize("family", PLM_FAMILIES)
def test_shipped_plm_reads_its_prompt(family, tmp_path):
    """A shipped PLM scores high with the task's own expert prompt, clearly lower with another's."""
    from promptdiff.data.datamodule import PromptDTDataModule
    from promptdiff.methods import PromptDTPretrain
    from promptdiff.production.collect import ensure_files
    from promptdiff.rollout.plm_report import prompt_report

    plm = PromptDTPretrain.load_policy(str(ROOT / "datasets" / family / "plm.ckpt"))
    dm = PromptDTDataModule(family, root=str(tmp_path))
    actor = ROOT / "datasets" / family / "expert_policy.pt"  # the shipped expert (scripted families have none)
    ensure_files(family, dm.required_files(), tmp_path, **({"expert_policy": str(actor)} if actor.is_file() else {}))
    report = prompt_report(plm.rollout_policy(), plm.family, dm.tail_prompts, seeds=(0,), episodes=2,
                           card_root=str(ROOT / "datasets"))
    assert report["expert_prompt_score"] >= 0.8
    assert report["other_task_prompt_score"] < report["expert_prompt_score"] - 0.5


ALL_FAMILIES = ["cheetah_dir", "cheetah_vel", "ant_dir", "ant_dir_ood", "ml1_reach", "ml1_pick_place", "point_robot"]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_family_ships_a_plm_with_its_report(family):
    """Each family has a PLM whose recorded 3-seed report meets the bar, matching the checkpoint."""
    import torch

    ckpt = torch.load(ROOT / "datasets" / family / "plm.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["family"] == family
    assert {"state_mean", "state_std"} <= set(ckpt["state_dict"]), "normalisation must travel with the PLM"
    report = json.loads((ROOT / "datasets" / family / "plm.json").read_text())
    assert report["family"] == family and report["episodes_per_task"] == 20 and report["prompt_seeds"] == [0, 1, 2]
    assert report["training"]["steps"] == ckpt["global_step"]
    assert report["expert_prompt_score"] >= 0.8, "the PLM does not use its own expert prompt well enough"
    assert report["other_task_prompt_score"] < report["expert_prompt_score"] - 0.3, "prompts barely matter"
    own = np.mean([migrate_result(r["expert_prompt"])["score_mean"] for r in report["runs"]])  # older key names too
    assert own == pytest.approx(report["expert_prompt_score"])
