"""Shared test helpers."""

import contextlib
import io
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def resolved_config(config, *args) -> dict:
    """The configuration `promptdiff fit --config <config> <args>` resolves to (composed files and defaults applied),
    as a dict: what the shipped config means, not how it is written. Linked keys (family, K, L, root, split, tasks)
    are in the data section only: the model receives them from there when it is built."""
    from promptdiff.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["fit", "--config", str(config), *map(str, args), "--print_config"])
    return yaml.safe_load(out.getvalue())


def link_shipped_plms(root, family: str) -> None:
    """Put the shipped PLMs of a family (plm.ckpt, plm_full.ckpt) under a test's data root, where the methods
    look for them (<root>/<family>/), as symbolic links."""
    from promptdiff.envs import get_family

    name = get_family(family).plm_name
    for ckpt in ("plm.ckpt", "plm_full.ckpt"):
        src, dst = ROOT / "datasets" / name / ckpt, Path(root) / name / ckpt
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)


@pytest.fixture(scope="session", autouse=True)
def point_robot_data():
    """The point robot's data files under datasets/, which many tests read with the default root: made once,
    explicitly (readers never generate data), as `promptdiff fit` would make them on first use."""
    from promptdiff.production.collect import ensure_files

    ensure_files("point_robot", [("train", "expert"), ("prompt", "expert")], ROOT / "datasets")
