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


def h5_contents(path, ignore=("workers", "root", "batch_size")) -> dict:
    """Every array (as bytes) and attribute of a trajectory file, by HDF5 name; the recorded collection config
    without the settings that the comparisons vary."""
    import json

    import h5py

    out = {}

    def attrs(name, obj):
        for key, value in obj.attrs.items():
            if key == "collection_config":
                value = {k: v for k, v in json.loads(value).items() if k not in ignore}
            out[f"{name}@{key}"] = value.tobytes() if isinstance(value, np.ndarray) else value

    with h5py.File(path, "r") as f:
        attrs("/", f)

        def visit(name, obj):
            attrs(name, obj)
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj.dtype.str, obj.shape, obj[()].tobytes())

        f.visititems(visit)
    return out


def test_regenerated_data_are_identical_with_one_or_two_workers(tmp_path):
    """Scripted noisy expert (point_robot, both files) and learned expert (ant_dir's prompt pool, whose mean
    actions must not depend on the batch either: 4 episodes in one batch vs 1 per batch on 2 workers)."""
    runs = {"point_robot": ({"tasks": [1, 2, 3], "episodes_per_task": 4, "prompt_episodes": 2, "batch_size": 5},
                            ("train", "prompt")),
            "ant_dir": ({"tasks": [0, 17], "prompt_episodes": 2, "roles": ["prompt"]}, ("prompt",))}  # fmt: skip
    for family, (settings, roles) in runs.items():
        contents = []
        for workers, batch in ((1, settings.get("batch_size", 4)), (2, settings.get("batch_size", 1))):
            cfg = shrunk(family, tmp_path / f"{family}-{workers}", **{**settings, "batch_size": batch},
                         workers=workers, card=False)  # fmt: skip
            collect(cfg)
            contents.append([h5_contents(dataset_path(family, role, root=cfg.root)) for role in roles])
        assert contents[0] == contents[1], family
        assert any(k.endswith("actions") for k in contents[0][0])


def test_learned_expert_acts_on_each_row_alone_and_without_blas(tmp_path):
    """A row's action is the same in any batch, and with MKL's conservative kernels and 2 threads (as another CPU
    would pick): the ant amplifies any last-bit difference into another episode."""
    from promptdiff.envs import make_env
    from promptdiff.production.experts import LearnedExpert

    code = textwrap.dedent(f"""
        import hashlib, numpy as np
        from promptdiff.envs import get_family, make_env
        from promptdiff.production.experts import LearnedExpert
        fam = get_family("ant_dir")
        envs = [make_env(fam, t) for t in range(7)]
        obs = np.stack([env.reset(seed=t)[0] for t, env in enumerate(envs)])
        expert = LearnedExpert(fam, {str(ROOT / "datasets/ant_dir/expert_policy.pt")!r})
        print(hashlib.sha256(expert(obs, envs, None).tobytes()).hexdigest())
    """)
    fam = get_family("ant_dir")
    envs = [make_env(fam, t) for t in range(7)]
    obs = np.stack([env.reset(seed=t)[0] for t, env in enumerate(envs)])
    expert = LearnedExpert(fam, ROOT / "datasets/ant_dir/expert_policy.pt")
    together = expert(obs, envs, None)
    for size in (1, 2, 3):
        apart = np.concatenate([expert(obs[i : i + size], envs[i : i + size], None) for i in range(0, 7, size)])
        assert apart.tobytes() == together.tobytes(), size
    import hashlib

    env = dict(os.environ, MKL_CBWR="COMPATIBLE", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.split()[-1] == hashlib.sha256(together.tobytes()).hexdigest()


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


NO_EPISODES = [("episodes_per_task", "0"), ("episodes_per_task", "-3"), ("tasks", "[]"), ("prompt_episodes", "0"),
               ("batch_size", "-1"), ("batch_size", "0")]  # fmt: skip


@pytest.mark.parametrize("option, value", NO_EPISODES)
def test_cli_refuses_settings_that_make_no_episodes_before_writing_anything(tmp_path, capsys, option, value):
    """A file marked complete with no episodes would be skipped as valid by every later run."""
    root = tmp_path / "data"
    rc = main(["collect", "--family", "point_robot", "--root", str(root), "--workers", "1", f"--{option}={value}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and option in err and "Traceback" not in err, err
    assert not root.exists()


def test_ensure_files_refuses_bad_overrides_before_writing_anything(tmp_path):
    from promptdiff.production.collect import ensure_files

    for bad in ({"prompt_episodes": 0}, {"tasks": []}, {"batch_size": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ensure_files("point_robot", [("prompt", "expert")], root=str(tmp_path), **bad)
    assert list(tmp_path.iterdir()) == []


def test_a_complete_file_without_episodes_is_regenerated_not_kept(tmp_path):
    import h5py

    path = dataset_path("point_robot", "prompt", root=tmp_path)
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as f:  # what an older version wrote for `--prompt_episodes 0`
        f.attrs.update({"schema": "promptdiff.trajectories", "schema_version": 1, "family": "point_robot",
                        "obs_dim": 2, "act_dim": 2, "role": "prompt", "quality": "expert", "num_episodes": 0,
                        "complete": True})  # fmt: skip
        for column in ("task_ids", "num_episodes", "return_mean", "return_std", "success_rate"):
            f.create_dataset(f"task_stats/{column}", data=np.zeros(0))
    collect(default_collect_config("point_robot", root=str(tmp_path), tasks=[4], prompt_episodes=2,
                                   roles=["prompt"], card=False, workers=1))  # fmt: skip
    with open_trajectories(path) as f:
        assert f.num_episodes == 2 and f.tasks == [4]


def test_partials_left_beside_valid_files_are_removed_by_the_next_run(tmp_path, capsys):
    import fcntl

    from promptdiff.production.collect import ensure_files

    small = dict(root=str(tmp_path), tasks=[4], prompt_episodes=1, roles=["prompt"], card=False, workers=1)
    collect(default_collect_config("point_robot", **small))
    stale = partial_path(dataset_path("point_robot", "train", root=tmp_path))
    stale.write_bytes(b"half a file")
    # while a collection holds the folder the partial may be its own: a run that needs nothing leaves it
    with open(tmp_path / "point_robot" / ".collect.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert ensure_files("point_robot", [("prompt", "expert")], root=str(tmp_path)) == []
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert stale.exists()
    assert ensure_files("point_robot", [("prompt", "expert")], root=str(tmp_path)) == []
    assert not stale.exists() and f"removing {stale}" in capsys.readouterr().out
    stale.write_bytes(b"half a file")
    collect(default_collect_config("point_robot", **small))  # a collection of another file of the family
    assert not stale.exists()


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
        found, frontier = [], [pid]
        while frontier:
            kids = [c for c, p in parents.items() if p in frontier]
            found += kids
            frontier = kids
        return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a reparented zombie waits for init to reap it)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killed_collection_takes_its_workers_along_and_the_next_run_cleans_up(tmp_path):
    """SIGKILL runs no cleanup in the parent: its worker processes must end by themselves; the partial file
    it leaves is removed by the next run, which writes a valid file."""
    import re
    import signal
    import threading
    import time

    cmd = [sys.executable, "-m", "promptdiff.cli.main", "collect", "--family", "point_robot", "--root", str(tmp_path),
           "--workers", "2", "--batch_size", "5", "--episodes_per_task", "200", "--roles", "[train]", "--card", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    progress = []
    threading.Thread(target=lambda: progress.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True).start()
    children = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:  # mid-run: episodes done, 8000 to go
            done = [int(n) for n in re.findall(r"(\d+)/8000", "".join(progress))]
            children = _descendants(proc.pid)
            if done and max(done) >= 20 and len(children) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no progress from the collection: {''.join(progress)[-2000:]}")
        partial = partial_path(dataset_path("point_robot", "train", root=tmp_path))
        assert partial.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and any(_running(p) for p in children):
            time.sleep(0.2)
        assert not [p for p in children if _running(p)], "processes outlived the killed collection"
    finally:
        proc.kill()
        for pid in children:  # only if the test failed: do not leave them behind
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert partial.exists()
    assert main(["collect", "--family", "point_robot", "--root", str(tmp_path), "--workers", "1", "--tasks", "[0]",
                 "--episodes_per_task", "2", "--roles", "[train]", "--card", "false"]) == 0  # fmt: skip
    assert not partial.exists()
    with open_trajectories(dataset_path("point_robot", "train", root=tmp_path), role="train") as f:
        assert f.num_episodes == 2


def test_regenerating_without_the_card_warns_when_the_data_differ_from_it(tmp_path, capsys):
    """Data regenerated under a card (card=False: a fresh checkout filling its cache) are checked against it: the
    same data pass silently, data that differ are named by task, file and both returns."""
    import json

    collect(shrunk("point_robot", tmp_path, tasks=[0, 3], episodes_per_task=2))  # writes the card
    regenerate = shrunk("point_robot", tmp_path, tasks=[0, 3], episodes_per_task=2, card=False)
    capsys.readouterr()
    collect(regenerate)
    assert "warning" not in capsys.readouterr().err  # deterministic scripted expert: the card's data again
    card_file = tmp_path / "point_robot" / "card.json"
    card = json.loads(card_file.read_text())
    card["tasks"]["3"]["prompt_return"] += 5.0  # as if the card's data came from another code or CPU
    card_file.write_text(json.dumps(card))
    collect(regenerate)
    err = capsys.readouterr().err
    assert "warning" in err and "task 3 of prompt-expert.h5" in err and str(card_file) in err
    assert json.loads(card_file.read_text()) == card  # the card is not rewritten
