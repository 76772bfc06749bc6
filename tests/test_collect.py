"""Expert data collection: real configs shrunk to a few tasks and episodes."""

import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from promptdiff.cli.main import main
from promptdiff.production.collect import CollectConfig, collect, default_collect_config, resolve_config
from promptdiff.production.expert_policy import ExpertActor, load_expert_actor
from promptdiff.data.hdf5_format import dataset_path, open_trajectories, partial_path
from promptdiff.envs import get_family

ROOT = Path(__file__).resolve().parents[1]


COLLECTED = ["point_robot", "cheetah_dir", "cheetah_vel", "ant_dir", "ml1_reach", "ml1_pick_place"]


def load_conf(family):
    path = ROOT / "conf" / "collect" / f"{family}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {"family": family}


@pytest.mark.parametrize("family", COLLECTED)
def test_collect_configs_resolve_to_the_family_defaults(family):
    """A shipped collection config (or none) means the family's own collection defaults."""
    fam = get_family(family)
    cfg = resolve_config(CollectConfig(**load_conf(family)))
    assert asdict(cfg) == asdict(default_collect_config(family))
    for key, value in fam.collect_defaults.items():
        assert getattr(cfg, key) == value


def test_collect_settings_left_unset_take_the_family_defaults_then_generic_ones():
    cfg = default_collect_config("point_robot", action_noise=0.5)
    assert cfg.action_noise == 0.5 and cfg.prompt_action_noise == 0.1 and cfg.qualities == ["expert"]
    cheetah = default_collect_config("cheetah_vel", root="elsewhere")
    assert cheetah.qualities == ["expert", "medium", "random"]
    assert cheetah.expert_policy == str(Path("elsewhere") / "cheetah_vel" / "expert_policy.pt")
    for bad in ({"qualities": []}, {"qualities": ["great"]}, {"roles": ["test"]}, {"tasks": []}, {"tasks": [40]}):
        with pytest.raises(ValueError):
            default_collect_config("point_robot", **bad)


def shrunk(family, tmp_path, **overrides):
    cfg = {**load_conf(family), "root": str(tmp_path), **overrides}
    fam = get_family(family)
    if fam.expert == "learned":  # the shipped actors, not copies under tmp_path
        cfg.setdefault("expert_policy", str(ROOT / "datasets" / family / "expert_policy.pt"))
        cfg.setdefault("medium_policy", str(ROOT / "datasets" / family / "medium_policy.pt"))
    return CollectConfig(**cfg)


def test_point_robot_collection_writes_train_and_prompt_pool(tmp_path):
    cfg = shrunk("point_robot", tmp_path, tasks=[0, 3, 39], episodes_per_task=3)
    collect(cfg)
    fam = get_family("point_robot")
    with open_trajectories(dataset_path("point_robot", "train", root=tmp_path), family="point_robot", role="train") as f:
        assert f.tasks == [0, 3, 39] and f.num_episodes == 9
        train = f.by_task()
        # noisy training actions: episodes of one task differ, yet all reach the goal
        assert not np.allclose(train[3][0].actions, train[3][1].actions)
        assert all(t.success for ts in train.values() for t in ts)
        assert f.attrs["seed"] == cfg.seed
    with open_trajectories(dataset_path("point_robot", "prompt", root=tmp_path), role="prompt") as f:
        pool = f.by_task()
        assert [len(pool[t]) for t in (0, 3, 39)] == [5, 5, 5]
        assert f.attrs["seed"] == cfg.prompt_seed != cfg.seed
        goal = np.array([np.cos(fam.task_params[39][0]), np.sin(fam.task_params[39][0])])
        assert np.linalg.norm(pool[39][0].observations[-1] - goal) < 0.05  # within the success radius
        assert not np.allclose(pool[39][0].actions, pool[39][1].actions)  # small noise: distinct prompts
        assert "noise" in f.attrs["expert"]
    card = yaml.safe_load((tmp_path / "point_robot" / "card.json").read_text())
    assert card["summary"]["train_meets_bar"] and card["summary"]["prompt_meets_bar"]
    t3 = card["tasks"]["3"]
    assert t3["split"] == "test" and t3["random_return"] < t3["expert_return"]


def test_learned_expert_path_stores_plain_observations(tmp_path):
    """A (randomly initialised) actor file drives collection; task features never reach the file."""
    torch.manual_seed(0)
    actor_path = tmp_path / "actor.pt"
    actor = ExpertActor(obs_dim=21, act_dim=6, hidden=(16, 16))
    torch.save({"hidden": actor.hidden, "state_dict": actor.state_dict()}, actor_path)
    assert load_expert_actor(actor_path).mean.out_features == 6
    cfg = shrunk("cheetah_vel", tmp_path, tasks=[2], episodes_per_task=2, prompt_episodes=2,
                 qualities=["expert"], expert_policy=str(actor_path), card=False)
    collect(cfg)
    with open_trajectories(dataset_path("cheetah_vel", "train", root=tmp_path), family="cheetah_vel", obs_dim=20) as f:
        train = f.by_task()[2]
        assert train[0].observations.shape == (201, 20) and len(train[0]) == 200
        assert not np.allclose(train[0].actions, train[1].actions)  # sampled actions
        assert "sampled" in f.attrs["expert"]
    with open_trajectories(dataset_path("cheetah_vel", "prompt", root=tmp_path)) as f:
        assert "mean" in f.attrs["expert"]


def test_metaworld_collection_hides_goal_and_succeeds(tmp_path):
    cfg = shrunk("ml1_reach", tmp_path, tasks=[11], episodes_per_task=1, prompt_episodes=1, card=False)
    collect(cfg)
    with open_trajectories(dataset_path("ml1_reach", "train", root=tmp_path), family="ml1_reach", obs_dim=39) as f:
        traj = f.by_task()[11][0]
    assert len(traj) == 500 and traj.truncations[-1]
    assert np.all(traj.observations[:, 36:] == 0.0)
    assert traj.success


def test_interrupted_collection_leaves_no_file_and_resumes(tmp_path):
    """Kill a collection (SIGKILL) while it writes its second file, then rerun it."""
    script = textwrap.dedent(f"""
        import os, signal
        import promptdiff.production.collect as c
        real, calls = c._rollout_job, []
        def dying(*a, **k):
            calls.append(1)
            if len(calls) == 3:  # first file: 2 batches; die inside the second file
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        c._rollout_job = dying
        cfg = c.default_collect_config("point_robot", root={str(tmp_path)!r}, tasks=[0, 1],
                                       episodes_per_task=25, prompt_episodes=25, card=False, workers=1)
        c.collect(cfg)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    train = dataset_path("point_robot", "train", root=tmp_path)
    prompt = dataset_path("point_robot", "prompt", root=tmp_path)
    assert train.exists() and not prompt.exists() and partial_path(prompt).exists()
    stamp = train.stat().st_mtime_ns
    cfg = default_collect_config("point_robot", root=str(tmp_path), tasks=[0, 1], episodes_per_task=25,
                                 prompt_episodes=25, card=False)
    collect(cfg)
    assert train.stat().st_mtime_ns == stamp  # finished file kept
    assert not partial_path(prompt).exists()
    with open_trajectories(prompt, role="prompt") as f:
        assert f.num_episodes == 50


def test_worker_processes_do_not_change_the_data(tmp_path):
    paths = {}
    for workers in (1, 2):
        cfg = shrunk("point_robot", tmp_path / str(workers), tasks=[1, 2, 3], episodes_per_task=4,
                     batch_size=5, workers=workers, card=False)
        paths[workers] = collect(cfg)[0]
    with open_trajectories(paths[1]) as a, open_trajectories(paths[2]) as b:
        assert a.num_episodes == b.num_episodes == 12
        for i in range(12):
            np.testing.assert_array_equal(a.episode(i).actions, b.episode(i).actions)
            assert a.episode(i).task_id == b.episode(i).task_id


def test_cli_collect_and_info(tmp_path, capsys):
    rc = main(["collect", "--config", str(ROOT / "conf/collect/point_robot.yaml"), "--root", str(tmp_path),
               "--tasks", "[5]", "--episodes_per_task", "2", "--card", "false"])
    assert rc == 0
    assert dataset_path("point_robot", "train", root=tmp_path).exists()
    assert main(["data", "info", str(dataset_path("point_robot", "train", root=tmp_path))]) == 0
    assert '"episodes": 2' in capsys.readouterr().out


def test_cli_reports_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["data", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "Traceback" not in err


def test_console_script_help():
    exe = Path(sys.executable).with_name("promptdiff")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "promptdiff.cli.main"]
    for extra in ([], ["collect"], ["data", "import-prompt-dt"], ["expert", "train"], ["fit"], ["test"]):
        out = subprocess.run(cmd + extra + ["--help"], capture_output=True, text=True, env={**os.environ})
        assert out.returncode == 0, out.stderr
        assert "usage: promptdiff" in out.stdout


def test_cli_import_prompt_dt(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for suffix, n in (("expert", 2), ("prompt-expert", 1)):
        trajs = [{"observations": rng.normal(size=(7, 20)).astype(np.float32),
                  "next_observations": rng.normal(size=(7, 20)).astype(np.float32),
                  "actions": rng.uniform(-1, 1, size=(7, 6)).astype(np.float32),
                  "rewards": rng.normal(size=(7, 1)).astype(np.float32),
                  "terminals": np.zeros((7, 1), bool)} for _ in range(n)]
        (src / f"cheetah_vel-4-{suffix}.pkl").write_bytes(pickle.dumps(trajs))
    assert main(["data", "import-prompt-dt", str(src), "--family", "cheetah_vel", "--out_root", str(tmp_path / "out")]) == 0
    with open_trajectories(dataset_path("cheetah_vel", "train", root=tmp_path / "out"), family="cheetah_vel") as f:
        assert f.num_episodes == 2 and f.tasks == [4]


def test_ensure_files_makes_only_the_missing_files_a_run_reads(tmp_path, monkeypatch):
    from dataclasses import replace

    from promptdiff.data.hdf5_format import DatasetError
    from promptdiff.data.segments import load_family_data
    from promptdiff.envs import families as registry

    small = replace(get_family("point_robot"), collect_defaults={"episodes_per_task": 1, "prompt_episodes": 1,
                                                                 "tasks": [0, 1, 3]})  # fmt: skip
    monkeypatch.setitem(registry.FAMILIES, "point_robot", small)
    # readers never generate: a missing file is an error naming the command that makes it
    with pytest.raises(DatasetError, match="promptdiff collect --family point_robot"):
        load_family_data("point_robot", root=tmp_path, tasks=[3], roles=("prompt",))
    assert not (tmp_path / "point_robot").exists()
    from promptdiff.production import collect as c

    c.ensure_files("point_robot", [("prompt", "expert")], root=str(tmp_path))
    path = dataset_path("point_robot", "prompt", root=tmp_path)
    with open_trajectories(path) as f:
        assert f.num_episodes == 3
    assert not dataset_path("point_robot", "train", root=tmp_path).exists()  # not read by that run: not made
    assert not (tmp_path / "point_robot" / "card.json").exists()
    stamp = path.stat().st_mtime_ns
    c.ensure_files("point_robot", [("prompt", "expert")], root=str(tmp_path))  # present: nothing is rewritten
    assert path.stat().st_mtime_ns == stamp
    assert load_family_data("point_robot", root=tmp_path, tasks=[3], roles=("prompt",))[0] is None


def test_runs_started_together_make_a_missing_file_once(tmp_path):
    """Benchmark cells start several `promptdiff fit` at once; their first-run collections of the same missing
    file must not collide (one writes, the others wait and find it)."""
    code = ("import sys; from promptdiff.production.collect import ensure_files; "
            "print(len(ensure_files('point_robot', [('prompt', 'expert')], sys.argv[1])))")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    assert sorted(out.strip().splitlines()[-1] for out, _ in outs) == ["0", "1"]  # written once, found once
    with open_trajectories(dataset_path("point_robot", "prompt", root=tmp_path)) as f:
        assert f.num_episodes == 40 * 5


def test_a_scripted_family_without_its_policy_is_refused_by_name(tmp_path):
    """No silent fallback to another family's expert: the family must name its scripted policy."""
    from dataclasses import replace

    from promptdiff.production.collect import make_policy

    orphan = replace(get_family("point_robot"), name="orphan", scripted_policy=None)
    cfg = CollectConfig(family="point_robot", root=str(tmp_path))
    with pytest.MonkeyPatch.context() as mp:
        from promptdiff.envs import families as registry

        mp.setitem(registry.FAMILIES, "orphan", orphan)
        with pytest.raises(ValueError, match="orphan has a scripted expert but names no scripted_policy"):
            make_policy(replace(cfg, family="orphan"), "expert", "train")
        mp.setitem(registry.FAMILIES, "orphan", replace(orphan, scripted_policy="nowhere.module:Expert"))
        with pytest.raises(ValueError, match="nowhere.module:Expert"):
            make_policy(replace(cfg, family="orphan"), "expert", "train")
