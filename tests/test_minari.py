"""Minari interoperability: export our trajectory files as Minari datasets and import them back."""

import json

import h5py
import numpy as np
import pytest

from promptdiff.cli.main import main
from promptdiff.data.hdf5_format import dataset_path
from promptdiff.envs import get_family

from test_pretrain import tiny_data

minari = pytest.importorskip("minari")
FAMILY = "point_robot"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    tiny_data(FAMILY, root)
    return root


def _contents(path) -> dict:
    """Everything in a trajectory file but the package versions (which the writer stamps): arrays and attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: v for k, v in f.attrs.items() if k != "package_versions"}

        def visit(name, obj):
            out[name] = {"attrs": dict(obj.attrs)}
            if isinstance(obj, h5py.Dataset):
                out[name]["data"] = obj[()]

        f.visititems(visit)
    return out


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("role", ["prompt", "train"])
def test_export_is_a_minari_dataset_and_the_round_trip_is_identical(data, tmp_path, role):
    mroot = tmp_path / "minari"
    assert main(["data", "export-minari", "--family", FAMILY, "--role", role, "--root", str(data),
                 "--minari_root", str(mroot)]) == 0  # fmt: skip
    dataset_id = f"promptdiff/{FAMILY}-{role}-expert-v0"
    ours = dataset_path(FAMILY, role, root=data)

    import os

    os.environ["MINARI_DATASETS_PATH"] = str(mroot)
    try:  # Minari's own reader sees our episodes
        ds = minari.load_dataset(dataset_id)
        from promptdiff.data.hdf5_format import open_trajectories

        with open_trajectories(ours) as f:
            assert ds.total_episodes == f.num_episodes > 1
            for i, ep in enumerate(ds.iterate_episodes()):
                traj = f.episode(i)
                for name in ("observations", "actions", "rewards", "terminations", "truncations"):
                    np.testing.assert_array_equal(getattr(ep, name), getattr(traj, name), err_msg=name)
                np.testing.assert_array_equal(ep.infos["success"][1:], traj.successes)
            metas = list(ds.storage.get_episode_metadata(range(ds.total_episodes)))
            assert [int(m["task_id"]) for m in metas] == [f.episode(i).task_id for i in range(f.num_episodes)]
        assert ds.spec.env_spec.id == get_family(FAMILY).env_id
        assert json.loads(ds.storage.metadata["promptdiff"])["role"] == role
    finally:
        del os.environ["MINARI_DATASETS_PATH"]

    back = tmp_path / "back.h5"
    assert main(["data", "import-minari", dataset_id, "--family", FAMILY, "--out", str(back),
                 "--minari_root", str(mroot)]) == 0  # fmt: skip
    assert _equal(_contents(ours), _contents(back))


def test_import_needs_task_ids_and_the_family_sizes(data, tmp_path, capsys):
    mroot = tmp_path / "minari"
    assert main(["data", "export-minari", "--family", FAMILY, "--role", "prompt", "--root", str(data),
                 "--minari_root", str(mroot)]) == 0  # fmt: skip
    dataset_id = f"promptdiff/{FAMILY}-prompt-expert-v0"
    # exporting twice would overwrite someone's dataset: refused
    assert main(["data", "export-minari", "--family", FAMILY, "--role", "prompt", "--root", str(data),
                 "--minari_root", str(mroot)]) == 2  # fmt: skip
    assert "already exists" in capsys.readouterr().err
    out = tmp_path / "x.h5"
    assert main(["data", "import-minari", dataset_id, "--family", FAMILY, "--out", str(out),
                 "--task_field", "goal", "--minari_root", str(mroot)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no 'goal' in its metadata" in err and not out.exists()
    assert main(["data", "import-minari", dataset_id, "--family", "ant_dir", "--out", str(out),
                 "--minari_root", str(mroot)]) == 2  # fmt: skip
    assert "ant_dir has (27,) and (8,)" in capsys.readouterr().err and not out.exists()
    # a mapping file gives the task ids instead
    n = minari_count(mroot, dataset_id)
    (tmp_path / "map.json").write_text(json.dumps({str(i): 7 for i in range(n)}))
    assert main(["data", "import-minari", dataset_id, "--family", FAMILY, "--out", str(out), "--task_map",
                 str(tmp_path / "map.json"), "--minari_root", str(mroot)]) == 0  # fmt: skip
    from promptdiff.data.hdf5_format import open_trajectories

    with open_trajectories(out) as f:
        assert f.tasks == [7]
    # an existing file is not replaced without --overwrite
    before = out.read_bytes()
    assert main(["data", "import-minari", dataset_id, "--family", FAMILY, "--out", str(out),
                 "--minari_root", str(mroot)]) == 2  # fmt: skip
    assert f"{out} exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["data", "import-minari", dataset_id, "--family", FAMILY, "--out", str(out), "--overwrite",
                 "--minari_root", str(mroot)]) == 0  # fmt: skip
    with open_trajectories(out) as f:
        assert f.tasks != [7]  # the task ids from the episode metadata this time


def test_data_info_reads_a_minari_dataset_by_id(data, tmp_path, capsys):
    mroot = tmp_path / "minari"
    assert main(["data", "export-minari", "--family", FAMILY, "--role", "prompt", "--root", str(data),
                 "--minari_root", str(mroot)]) == 0  # fmt: skip
    capsys.readouterr()
    dataset_id = f"promptdiff/{FAMILY}-prompt-expert-v0"
    assert main(["data", "info", dataset_id, "--family", FAMILY, "--minari_root", str(mroot)]) == 0
    from_minari = json.loads(capsys.readouterr().out)
    assert main(["data", "info", str(dataset_path(FAMILY, "prompt", root=data))]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert from_minari.pop("minari_dataset") == dataset_id
    from_minari.pop("file", None), from_file.pop("file", None)
    assert from_minari == from_file
    assert main(["data", "info", dataset_id, "--minari_root", str(mroot)]) == 2
    assert "needs --family" in capsys.readouterr().err


def minari_count(mroot, dataset_id) -> int:
    import os

    os.environ["MINARI_DATASETS_PATH"] = str(mroot)
    try:
        return minari.load_dataset(dataset_id).total_episodes
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
