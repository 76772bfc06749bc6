"""`promptdiff benchmark`: the quick Table 1 end to end (run once, shared), resuming, the pure
table functions on hand-written cell JSONs, and what makes a cell done (complete, same config) and
what an interrupted or killed benchmark leaves, with a stand-in for `promptdiff fit` (FAKE_FIT)."""

import contextlib
import csv
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import promptdiff.benchmark as bench
from promptdiff.benchmark import BenchmarkConfig, MethodSpec, cells, collect, markdown, relative, resolve, run
from promptdiff.cli.main import main
from promptdiff.data.hdf5_format import content_digest
from promptdiff.threads import cpu_model

from test_pretrain import ROOT

TABLE1 = ROOT / "conf" / "benchmark" / "table1.yaml"
PLM_FULL = ROOT / "datasets" / "point_robot" / "plm_full.ckpt"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORKERS = 2


def load(path: Path, **overrides) -> BenchmarkConfig:
    """A benchmark YAML as `promptdiff benchmark` builds it (methods as MethodSpec)."""
    d = yaml.safe_load(Path(path).read_text())
    d["methods"] = [MethodSpec(**m) for m in d["methods"]]
    d.update(overrides)
    return BenchmarkConfig(**d)


@pytest.fixture(scope="module", autouse=True)
def _repo_root():
    """The benchmark configs name their training configs and data relative to the repository root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        yield


# -- the quick benchmark, end to end (one run, shared) ----------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory, _repo_root):
    """`promptdiff benchmark --config conf/benchmark/table1.yaml --quick --out_dir <tmp>`, run once.

    With `--workers 2`: two cells at a time, one thread each (the CI machine has 2 cores); on a loaded
    2-core machine this halves the run (about 1.5 min instead of 3) and exercises the parallel path."""
    out = tmp_path_factory.mktemp("benchmark")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["benchmark", "--config", str(TABLE1), "--quick", "--out_dir", str(out), "--workers", str(WORKERS)])
    cfg = resolve(load(TABLE1, out_dir=str(out)), quick=True)
    every = cells(cfg)
    return {"rc": rc, "stderr": err.getvalue(), "out": out, "cfg": cfg, "cells": every,
            "dir": out / cfg.name, "full_ready": PLM_FULL.is_file()}  # fmt: skip


def _by_method(cells_):
    return {c.method.name: c for c in cells_}


def test_quick_benchmark_writes_every_cell_and_the_tables(quick):
    cfg, every, full_ready = quick["cfg"], quick["cells"], quick["full_ready"]
    preset = yaml.safe_load(TABLE1.read_text())["quick_preset"]
    assert [m.name for m in cfg.methods] == list(preset["methods"]) and cfg.families == preset["families"]
    assert len(every) == len(cfg.methods) * len(cfg.families) * len(cfg.seeds)
    by = _by_method(every)
    expected_missing = set() if full_ready else {"full_data"}
    if full_ready:
        assert quick["rc"] == 0, quick["stderr"][-3000:]
    else:  # the full-data PLM is not pre-trained yet: exactly that cell fails, the exit code says so
        assert quick["rc"] == 1
        assert "1 cells failed: full_data/point_robot/seed0" in quick["stderr"]
        assert "plm_full.ckpt not found" in by["full_data"].path.with_suffix(".log").read_text()

    for name, cell in by.items():
        assert cell.path.is_file() == (name not in expected_missing), f"cell {cell.label}"
        if name in expected_missing:
            continue
        summary = json.loads(cell.path.read_text())
        assert summary["benchmark_method"] == name and summary["episodes"] == cfg.episodes
        assert summary["seed"] == summary["prompt_seed"] == cell.seed
        assert summary["primary"] in summary["sets"] and set(summary["sets"]) == {summary["primary"]}  # primary_only
        assert f"--seed_everything={cell.seed}" in summary["command"] and summary["wall_time_s"] > 0
        assert summary["config_hash"] == bench.config_hash(cfg, cell) and bench.read_cell(cfg, cell) == summary
        assert not cell.partial.exists()  # the process's own output is gone once the cell's JSON is written
        assert isinstance(summary["tuned_parameters"], int)
        resolved = yaml.safe_load((cell.path.with_suffix("") / "config.yaml").read_text())  # provenance, per cell
        assert resolved["data"]["init_args"]["family"] == cell.family and resolved["seed_everything"] == cell.seed

    table = (quick["dir"] / "table.md").read_text()
    first_table = table.split("Normalised score")[0]
    row = next(line for line in first_table.splitlines() if line.startswith("| point_robot |"))
    shown = dict(zip([m.name for m in cfg.methods], [c.strip() for c in row.split("|")[2:-1]]))
    assert {m for m, text in shown.items() if text == "missing"} == expected_missing
    cells_shown = [c.strip() for line in table.splitlines() if line.startswith("|") for c in line.split("|")]
    assert cells_shown.count("missing") == len(expected_missing)  # in no other row either
    assert ("INCOMPLETE" in table) == bool(expected_missing)

    with open(quick["dir"] / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == [m.name for m in cfg.methods]  # one row per method (one family)
    for r in rows:
        assert int(r["seeds_expected"]) == len(cfg.seeds)
        assert int(r["seeds"]) == (0 if r["method"] in expected_missing else len(cfg.seeds)), r["method"]
        if r["method"] not in expected_missing:
            summary = json.loads(by[r["method"]].path.read_text())
            assert int(r["tuned_parameters"]) == summary["tuned_parameters"]
            assert float(r["return_mean"]) == pytest.approx(summary["sets"][summary["primary"]]["return_mean"])

    png = (quick["dir"] / "table.png").read_bytes()
    assert len(png) > 1000 and png.startswith(PNG_MAGIC)


def test_rerun_runs_only_missing_cells(quick, monkeypatch):
    """Resume: a second run runs no finished cell; deleting one cell's JSON reruns exactly that one.
    (Without the full-data PLM its cell has no JSON, so every run retries it, and fails again.)"""
    cfg0 = load(TABLE1, out_dir=str(quick["out"]))
    every, full_ready = quick["cells"], quick["full_ready"]
    retried = [] if full_ready else ["full_data/point_robot/seed0"]
    ran = []
    real_start_cell = bench.start_cell
    monkeypatch.setattr(bench, "start_cell",
                        lambda cfg, cell, threads: ran.append(cell.label) or real_start_cell(cfg, cell, threads))

    def mtimes():
        return {c.label: c.path.stat().st_mtime_ns for c in every if c.path.is_file()}

    runs_path = quick["dir"] / "runs.json"
    first = json.loads(runs_path.read_text())  # the fixture's invocation, timed
    assert len(first) == 1 and first[0]["finished"] and first[0]["workers"] == WORKERS
    assert first[0]["cells_done"] + first[0]["cells_failed"] == first[0]["cells_todo"] == len(every)
    assert first[0]["cells_failed"] == len(retried) and first[0]["elapsed_s"] > 0

    before = mtimes()
    result = run(cfg0, quick=True, workers=WORKERS, progress=False)
    assert ran == retried
    assert len(json.loads(runs_path.read_text())) == 1 + bool(retried)  # nothing to run: nothing recorded
    assert result["skipped"] == len(every) - len(retried) and result["done"] == 0 and result["failed"] == retried
    assert mtimes() == before

    redo = _by_method(every)["mt_orl"]
    redo.path.unlink()
    ran.clear()
    result = run(replace(cfg0, threads=1), quick=True, workers=WORKERS, progress=False)  # threads: no new config
    assert sorted(ran) == sorted([redo.label, *retried])
    assert result["done"] == 1 and result["failed"] == retried and result["skipped"] == len(every) - 1 - len(retried)
    after = mtimes()
    assert redo.path.is_file() and after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != redo.label} == {k: v for k, v in before.items() if k != redo.label}
    redone = json.loads(redo.path.read_text())
    assert redone["benchmark_method"] == "mt_orl"
    assert redone["threads"] == 1 and redone["torch_threads"] == 1  # given, and what the cell's torch ran with
    # the CPU and torch's kernels for it: another instruction set rounds differently, so other returns
    assert redone["cpu"] == cpu_model() and redone["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    runs = json.loads(runs_path.read_text())
    assert runs[0] == first[0] and runs[-1]["cells_done"] == 1 and runs[-1]["finished"] and runs[-1]["threads_per_cell"] == 1
    assert runs[-1]["machine"].endswith(f"cores, {cpu_model()}")
    total = sum(r["elapsed_s"] for r in runs) / 60
    assert f"Elapsed wall-clock time of the benchmark invocations that ran cells (runs.json): {total:.1f} min " \
        f"for {sum(r['cells_done'] for r in runs)} cells, in {len(runs)} invocation(s)" in (quick["dir"] / "table.md").read_text()


# -- pure functions ----------------------------------------------------------------------------------
def test_relative_compares_returns_and_costs():
    assert relative(6.0, 3.0) == pytest.approx(2.0)  # positive returns: ratio
    assert relative(3.0, 6.0) == pytest.approx(0.5)
    assert relative(-2.0, -4.0) == pytest.approx(2.0)  # costs: half the cost is twice as good
    assert relative(-8.0, -4.0) == pytest.approx(0.5)
    for ret, ref in ((1.0, -1.0), (-1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (None, 1.0), (1.0, None)):
        assert relative(ret, ref) is None, (ret, ref)


def _cell_json(cfg: BenchmarkConfig, cell, ret: float, score: float, params: int = 7, wall: float = 30.0):
    """A done cell's JSON, as the benchmark writes it."""
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    cell.path.write_text(json.dumps({
        "primary": "tuned", "tuned_parameters": params, "benchmark_method": cell.method.name, "wall_time_s": wall,
        "command": f"promptdiff fit # {cell.label}", "config_hash": bench.config_hash(cfg, cell),
        # a decoy set: the tables must read the primary one
        "sets": {"tuned": {"return_mean": ret, "score_mean": score}, "expert": {"return_mean": 1e6, "score_mean": 1e6}},
    }))  # fmt: skip


def test_collect_and_markdown_on_hand_written_cells(tmp_path):
    methods = [MethodSpec("ref", "a.yaml"), MethodSpec("partial", "b.yaml"), MethodSpec("absent", "c.yaml")]
    cfg = BenchmarkConfig(name="t", methods=methods, families=["point_robot"], seeds=[0, 1], episodes=4,
                          reference="ref", out_dir=str(tmp_path))  # fmt: skip
    every = cells(cfg)
    cell = {(c.method.name, c.seed): c for c in every}
    ref_ret, ref_score = [-4.0, -6.5], [0.9, 0.7]
    for s in (0, 1):
        _cell_json(cfg, cell[("ref", s)], ref_ret[s], ref_score[s], wall=60.0)
    _cell_json(cfg, cell[("partial", 0)], -2.5, 0.95, params=11)

    rows = {r["method"]: r for r in collect(cfg, every)}
    ref = rows["ref"]
    assert (ref["seeds"], ref["seeds_expected"]) == (2, 2)
    assert ref["return_mean"] == pytest.approx(np.mean(ref_ret)) and ref["return_std"] == pytest.approx(np.std(ref_ret))
    assert ref["score_mean"] == pytest.approx(np.mean(ref_score)) and ref["score_std"] == pytest.approx(np.std(ref_score))
    assert ref["tuned_parameters"] == 7 and ref["wall_time_s"] == pytest.approx(120.0) and len(ref["commands"]) == 2
    assert rows["partial"]["seeds"] == 1 and rows["partial"]["return_mean"] == pytest.approx(-2.5)
    assert rows["partial"]["tuned_parameters"] == 11
    assert rows["absent"]["seeds"] == 0 and rows["absent"]["return_mean"] is None and rows["absent"]["tuned_parameters"] is None

    md = markdown(cfg, list(rows.values()))
    assert "INCOMPLETE" in md
    line = next(line for line in md.splitlines() if line.startswith("| point_robot |"))
    ref_text, partial_text, absent_text = [c.strip() for c in line.split("|")[2:-1]]
    assert ref_text == f"{np.mean(ref_ret):.1f} ± {np.std(ref_ret):.1f}"
    assert partial_text == "-2.5 ± 0.0 (1/2 seeds)" and absent_text == "missing"
    rel = [line for line in md.splitlines() if line.startswith("| point_robot |")][2]  # returns, scores, relative
    assert [c.strip() for c in rel.split("|")[2:-1]] == ["1.000", f"{relative(-2.5, np.mean(ref_ret)):.3f}", "—"]

    # all cells present: no INCOMPLETE note, nothing missing, and write_tables writes all three files
    done = BenchmarkConfig(name="t", methods=methods[:1], families=["point_robot"], seeds=[0, 1], episodes=4,
                           reference="ref", out_dir=str(tmp_path))  # fmt: skip
    md = markdown(done, collect(done, cells(done)))
    assert "INCOMPLETE" not in md and "missing" not in md and "/2 seeds)" not in md
    outputs = bench.write_tables(cfg, every)
    with open(outputs["csv"], newline="") as fh:
        assert [r["seeds"] for r in csv.DictReader(fh)] == ["2", "1", "0"]
    assert Path(outputs["png"]).read_bytes().startswith(PNG_MAGIC) and "missing" in Path(outputs["md"]).read_text()


def test_averages_never_mix_in_partial_cells(tmp_path):
    """A method with a partial family gets no overall average; a second row averages the families that are
    complete for every method."""
    methods = [MethodSpec("a", "a.yaml"), MethodSpec("b", "b.yaml")]
    cfg = BenchmarkConfig(name="t", methods=methods, families=["point_robot", "cheetah_dir"], seeds=[0, 1],
                          reference="a", out_dir=str(tmp_path))  # fmt: skip
    every = cells(cfg)
    ret = {("a", "point_robot"): [-4.0, -6.0], ("a", "cheetah_dir"): [100.0, 110.0],
           ("b", "point_robot"): [-3.0, -5.0], ("b", "cheetah_dir"): [90.0]}  # b misses a seed on cheetah_dir
    for c in every:
        r = ret[(c.method.name, c.family)]
        if c.seed < len(r):
            _cell_json(cfg, c, r[c.seed], r[c.seed] / 100)
    md = markdown(cfg, collect(cfg, every)).splitlines()
    first = md.index(next(line for line in md if line.startswith("| average |")))
    assert [c.strip() for c in md[first].split("|")[2:-1]] == [f"{np.mean([-4, -6, 100, 110]):.1f}", "—"]
    assert md[first + 1].startswith("| average over point_robot (complete for every method) |")
    assert [c.strip() for c in md[first + 1].split("|")[2:-1]] == ["-5.0", "-4.0"]


def test_tables_only_runs_nothing_and_tabulates_the_cells_that_exist(tmp_path, monkeypatch, capsys):
    """`--tables_only`: cells copied in from elsewhere are tabulated; missing ones show as missing, none runs."""
    monkeypatch.setattr(bench, "start_cell", lambda *a: pytest.fail("a cell ran"))
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "families": ["point_robot"], "seeds": [0, 1], "out_dir": str(tmp_path),
                                      "reference": "prompt_dt", "methods": [
                                          {"name": "prompt_dt", "config": "conf/baselines/prompt_dt.yaml"},
                                          {"name": "mt_orl", "config": "conf/baselines/mt_orl.yaml"}]}))  # fmt: skip
    cfg = load(config)
    cell = {(c.method.name, c.seed): c for c in cells(cfg)}
    path = {k: c.path for k, c in cell.items()}
    _cell_json(cfg, cell[("prompt_dt", 0)], -4.0, 0.9)
    _cell_json(cfg, cell[("prompt_dt", 1)], -6.0, 0.8)
    assert main(["benchmark", "--config", str(config), "--tables_only"]) == 0
    assert not path[("mt_orl", 0)].exists() and not path[("mt_orl", 0)].with_suffix(".log").exists()
    md = (tmp_path / "t" / "table.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| point_robot |"))
    assert [c.strip() for c in line.split("|")[2:-1]] == ["-5.0 ± 1.0", "missing"]
    assert "INCOMPLETE" in md and str(tmp_path / "t" / "table.md") in capsys.readouterr().out


def test_a_cell_made_from_other_data_is_not_done(tmp_path, capsys):
    """A cell records its data files by content digest; the same data written again (other bytes) keeps it done,
    other data (e.g. regenerated by other code) make it not done, named in the stale-cells message. Files absent
    now, and cells from before the record, cannot be compared and stay done."""
    from test_hdf5_format import make_traj, write

    cfg = BenchmarkConfig(name="d", methods=[MethodSpec("a", "conf/baselines/prompt_dt.yaml")], families=["point_robot"], seeds=[0, 1, 2],
                          out_dir=str(tmp_path), reference="a")  # fmt: skip
    cell = {c.seed: c for c in cells(cfg)}
    root = tmp_path / "data"
    pool = write((root / "point_robot").mkdir(parents=True) or root / "point_robot" / "prompt-expert.h5",
                 [make_traj(0, seed=1), make_traj(1, seed=2)], role="prompt")  # fmt: skip
    record = {"root": str(root), "files": {"point_robot/prompt-expert.h5": content_digest(pool)}}
    for seed in (0, 1):
        _cell_json(cfg, cell[seed], -1.0, 0.5)
        summary = json.loads(cell[seed].path.read_text())
        cell[seed].path.write_text(json.dumps({**summary, "data": record} if seed == 0 else summary))
    _cell_json(cfg, cell[2], -1.0, 0.5)
    summary = json.loads(cell[2].path.read_text())
    cell[2].path.write_text(json.dumps({**summary, "data": {"root": str(root), "files": {"point_robot/gone.h5": "0" * 16}}}))
    assert all(bench.read_cell(cfg, c) for c in cell.values())

    write(pool, [make_traj(0, seed=1), make_traj(1, seed=2)], role="prompt")  # the same data again
    assert bench.read_cell(cfg, cell[0])
    nudged = make_traj(1, seed=2)
    nudged.observations[0, 0] += 1e-3
    write(pool, [make_traj(0, seed=1), nudged], role="prompt")  # another draw
    assert bench.read_cell(cfg, cell[0]) is None
    assert bench.read_cell(cfg, cell[1]) and bench.read_cell(cfg, cell[2])  # no record; a file not there now

    run(cfg, progress=False, tables_only=True)
    assert "1 cell JSON(s) of d are incomplete or were made by another config or from other data files" in (
        capsys.readouterr().err)
    pool.write_bytes(b"not hdf5")
    assert bench.read_cell(cfg, cell[0]) is None


def test_resolve_quick_keeps_only_the_preset_methods():
    cfg = BenchmarkConfig(name="b", methods=[MethodSpec("a", "a.yaml", ["--x=1"]), MethodSpec("b", "b.yaml"),
                                             MethodSpec("c", "c.yaml")],
                          families=["cheetah_dir", "ant_dir"], seeds=[0, 1, 2], episodes=20,
                          quick_preset={"families": ["point_robot"], "seeds": [5], "episodes": 2,
                                        "methods": {"c": ["--y=2"], "a": None}})  # fmt: skip
    assert resolve(cfg, quick=False) is cfg
    q = resolve(cfg, quick=True)
    assert q.name == "b_quick" and q.families == ["point_robot"] and q.seeds == [5] and q.episodes == 2
    assert [(m.name, m.args) for m in q.methods] == [("a", ["--x=1"]), ("c", ["--y=2"])]  # config order, args appended
    with pytest.raises(ValueError, match=r"unknown methods \['nope'\]"):
        resolve(replace(cfg, quick_preset={"methods": {"a": [], "nope": []}}), quick=True)
    with pytest.raises(ValueError, match="no `quick_preset`"):
        resolve(replace(cfg, quick_preset=None), quick=True)
    # the shipped Table 1: every quick method is one of its methods
    table1 = load(TABLE1)
    assert [m.name for m in resolve(table1, quick=True).methods] == [
        m.name for m in table1.methods if m.name in table1.quick_preset["methods"]]


def test_bad_family_or_missing_config_fails_before_any_cell(tmp_path, monkeypatch, capsys):
    def no_cell(*args):
        raise AssertionError("a cell ran")

    monkeypatch.setattr(bench, "start_cell", no_cell)
    good = MethodSpec("prompt_dt", "conf/baselines/prompt_dt.yaml")
    base = BenchmarkConfig(name="bad", methods=[good], families=["point_robot"], seeds=[0], out_dir=str(tmp_path))
    with pytest.raises(KeyError, match="unknown task family 'no_such_family'"):
        run(replace(base, families=["point_robot", "no_such_family"]), progress=False)
    with pytest.raises(FileNotFoundError, match=r"method ghost: config conf/baselines/ghost_point_robot.yaml not found"):
        run(replace(base, methods=[good, MethodSpec("ghost", "conf/baselines/ghost_{family}.yaml")]), progress=False)
    with pytest.raises(ValueError, match="method names repeat"):
        run(replace(base, methods=[good, good]), progress=False)
    assert not (tmp_path / "bad").exists(), "something was written before the config was checked"

    # through the command line: exit code 2 and the reason, nothing run
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"name": "bad", "families": ["point_robot"], "seeds": [0], "out_dir": str(tmp_path),
                                      "methods": [{"name": "ghost", "config": "conf/baselines/ghost.yaml"}]}))  # fmt: skip
    assert main(["benchmark", "--config", str(config)]) == 2
    assert "config conf/baselines/ghost.yaml not found" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "benchmark").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_benchmark_preset_is_valid(path):
    """Every shipped preset parses, names existing training configs for each family, and its --quick
    preset resolves (caught here rather than hours into a run)."""
    cfg = load(path)
    bench._check(cfg)
    assert cfg.reference is None or cfg.reference in [m.name for m in cfg.methods]
    if cfg.quick_preset:
        quick_cfg = resolve(cfg, quick=True)
        bench._check(quick_cfg)
        assert quick_cfg.name == f"{cfg.name}_quick" and quick_cfg.methods


# -- when a cell is done; Ctrl-C; a killed benchmark (cells run a stand-in for `promptdiff fit`) -----------
FAKE_FIT = r'''"""Stands in for `promptdiff fit` in a benchmark cell: notes its start in $FAKE_FIT_RECORD,
ignores SIGINT and SIGTERM (so that only the benchmark's SIGKILL stops it, and its helper too), starts a helper
process with --fake.helper=1, sleeps --fake.sleep seconds, writes a rollout summary where the callback's
final_json says and exits 0."""
import json, os, signal, subprocess, sys, time

opt = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
final = json.loads(opt["--trainer.callbacks"])[0]["init_args"]["final_json"]


def note(**entry):
    with open(os.environ["FAKE_FIT_RECORD"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) if "--fake.helper" in opt else None
note(event="start", final=final, pid=os.getpid(), helper=helper and helper.pid)
time.sleep(float(opt.get("--fake.sleep", 0)))
seed = int(opt["--seed_everything"])
with open(final, "w") as fh:
    json.dump({"family": opt["--data.init_args.family"], "seed": seed, "primary": "tuned", "tuned_parameters": 3,
               "sets": {"tuned": {"return_mean": -1.0 - seed, "score_mean": 0.5}}}, fh)
note(event="wrote", final=final)
'''

DRIVER = r'''"""`promptdiff benchmark --config <argv[2]>` whose cells run <argv[1]>; argv[3] "no_death_signal": as on a
platform where a cell's process does not die with the benchmark."""
import sys

import promptdiff.benchmark as bench
from promptdiff.cli.main import main

bench.PROGRAM = (sys.executable, sys.argv[1])
bench._GRACE_S = 1.0
if sys.argv[3] == "no_death_signal":
    bench._dies_with = lambda parent: None
sys.exit(main(["benchmark", "--config", sys.argv[2]]))
'''

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; a cell dies with its benchmark on Linux")


@pytest.fixture
def fake_fit(tmp_path, monkeypatch):
    """The stand-in program, its record file (in the environment the cells inherit), and readers of the record."""
    program, record = tmp_path / "fake_fit.py", tmp_path / "fake_fit.jsonl"
    program.write_text(FAKE_FIT)
    record.touch()
    monkeypatch.setenv("FAKE_FIT_RECORD", str(record))

    def events(kind: str) -> list[dict]:
        entries = [json.loads(line) for line in record.read_text().splitlines()]
        for e in entries:  # <out>/<name>/cells/<method>/<family>/seed<s>(.partial).json -> method/family/seed<s>
            parts = Path(e["final"]).parts
            e["label"] = f"{parts[-3]}/{parts[-2]}/{parts[-1].split('.')[0]}"
        return [e for e in entries if e["event"] == kind]

    return {"program": program, "events": events}


def _fake_config(tmp_path: Path, name: str, methods: dict[str, list[str]], seeds: list[int], workers: int = 2) -> Path:
    """A benchmark YAML on point_robot whose methods are the stand-in with the given arguments."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "families": ["point_robot"], "seeds": seeds, "out_dir": str(tmp_path),
                                    "workers": workers, "reference": None,
                                    "methods": [{"name": m, "config": "conf/baselines/prompt_dt.yaml", "args": args}
                                                for m, args in methods.items()]}))  # fmt: skip
    return path


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed orphan may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.1)


def _start_driver(tmp_path: Path, program: Path, config: Path, death_signal: bool = True) -> subprocess.Popen:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(driver), str(program), str(config),
                             "death_signal" if death_signal else "no_death_signal"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)  # fmt: skip


@linux_only
@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_ctrl_c_cancels_the_queue_stops_running_cells_and_records_the_interruption(tmp_path, fake_fit, how):
    """Ctrl-C (SIGINT to the terminal's process group) with 3 fast cells done, 2 slow ones running and 1 queued:
    the queued one never starts, the running ones (and what they started) are stopped, no JSON is left for
    them, runs.json says what happened, and the command exits 130 with a one-line hint to resume. SIGTERM to the
    benchmark alone (a scheduler preempting its job) does the same, exit status 143."""
    config = _fake_config(tmp_path, "stop", {"fast": [], "slow": ["--fake.sleep=120", "--fake.helper=1"]}, [0, 1, 2])
    parent = _start_driver(tmp_path, fake_fit["program"], config)
    try:
        _wait_for(lambda: len(fake_fit["events"]("start")) == 5, 120, "5 cells to start")
        time.sleep(0.5)  # let the last one settle into its sleep
        if how == "ctrl_c":
            os.killpg(parent.pid, signal.SIGINT)
        else:
            os.kill(parent.pid, signal.SIGTERM)
        rc = parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    err = parent.stderr.read()
    assert rc == (130 if how == "ctrl_c" else 143), err[-2000:]
    assert err.splitlines()[-1] == ("promptdiff: benchmark stop interrupted (3 cells finished, 0 failed, 2 stopped, "
                                    "1 not started); rerun the same command to resume")  # fmt: skip
    cfg = load(config)
    started = {e["label"]: e for e in fake_fit["events"]("start")}
    assert sorted(started) == [f"fast/point_robot/seed{s}" for s in (0, 1, 2)] + ["slow/point_robot/seed0",
                                                                                 "slow/point_robot/seed1"]
    for c in cells(cfg):
        assert (bench.read_cell(cfg, c) is not None) == (c.method.name == "fast"), c.label
        if c.method.name == "slow":
            assert not c.path.exists() and not c.partial.exists(), c.label
    for e in started.values():
        _wait_for(lambda: not _alive(e["pid"]) and not (e["helper"] and _alive(e["helper"])), 5, f"{e['label']} to end")
    runs = json.loads((tmp_path / "stop" / "runs.json").read_text())
    assert len(runs) == 1 and runs[0]["elapsed_s"] > 0
    assert {k: runs[0][k] for k in ("cells_todo", "cells_done", "cells_failed", "finished", "interrupted",
                                    "cells_stopped", "cells_not_started")} == {  # fmt: skip
        "cells_todo": 6, "cells_done": 3, "cells_failed": 0, "finished": False, "interrupted": True,
        "cells_stopped": 2, "cells_not_started": 1}


@linux_only
@pytest.mark.parametrize("death_signal", [True, False], ids=["dies_with_parent", "orphan_finishes"])
def test_cells_of_a_killed_benchmark_never_count(tmp_path, fake_fit, death_signal):
    """SIGKILL to the benchmark while two cells run: on Linux they die with it within seconds; and where a cell's
    process outlives it and writes its summary, that summary is never taken for the cell's result."""
    config = _fake_config(tmp_path, "killed", {"slow": ["--fake.sleep=3"]}, [0, 1])
    parent = _start_driver(tmp_path, fake_fit["program"], config, death_signal=death_signal)
    try:
        _wait_for(lambda: len(fake_fit["events"]("start")) == 2, 120, "2 cells to start")
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the benchmark only: the cells run in sessions of their own
        parent.wait()
    started = fake_fit["events"]("start")
    if death_signal:
        _wait_for(lambda: not any(_alive(e["pid"]) for e in started), 5, "the cells to die with the benchmark")
        time.sleep(3.5)  # past the time they would have written their summaries
        assert fake_fit["events"]("wrote") == []
    else:
        _wait_for(lambda: len(fake_fit["events"]("wrote")) == 2, 30, "the orphaned cells to write their summaries")
    cfg = load(config)
    for c in cells(cfg):
        assert bench.read_cell(cfg, c) is None and not c.path.exists(), c.label
        assert c.partial.exists() == (not death_signal), c.label


def test_incomplete_or_other_config_cells_are_rerun_and_tables_show_only_done_cells(tmp_path, fake_fit, monkeypatch):
    """A cell counts only when its JSON holds what the benchmark adds (method, command, wall time) and the hash of
    the cell's current config: one without them (what a process orphaned by a killed benchmark used to leave), with
    another hash, or from before the hash with another command is rerun; the same config is never rerun, also when
    the results folder moves. The tables skip cells that are not done and never show 0.0 min for a cell that ran."""
    monkeypatch.setattr(bench, "PROGRAM", (sys.executable, str(fake_fit["program"])))
    cfg = load(_fake_config(tmp_path, "redo", {"a": [], "b": ["--x=1"]}, [0, 1]))
    started = lambda: sorted(e["label"] for e in fake_fit["events"]("start"))  # noqa: E731
    every = {c.label: c for c in cells(cfg)}
    assert run(cfg, progress=False)["done"] == 4 and started() == sorted(every)
    table = (tmp_path / "redo" / "table.md").read_text()
    assert "| wall time, all cells (min) | < 0.1 | < 0.1 |" in table  # fast cells, but cells that ran

    def result(label):
        return json.loads(every[label].path.read_text())

    summary = result("a/point_robot/seed0")
    assert summary["config_hash"] == bench.config_hash(cfg, every["a/point_robot/seed0"]) and summary["wall_time_s"] > 0
    assert "seed0.partial.json" in summary["command"]  # the command as run: the process writes the partial file
    before = {k: c.path.stat().st_mtime_ns for k, c in every.items()}
    assert run(cfg, progress=False)["skipped"] == 4 and len(started()) == 4  # the same config: nothing reruns
    assert {k: c.path.stat().st_mtime_ns for k, c in every.items()} == before
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "redo", moved / "redo")
    assert all(bench.read_cell(replace(cfg, out_dir=str(moved)), c) for c in cells(replace(cfg, out_dir=str(moved))))

    bare = {k: v for k, v in result("a/point_robot/seed0").items()
            if k not in ("benchmark_method", "command", "config_hash", "wall_time_s", "threads")}  # fmt: skip
    every["a/point_robot/seed0"].path.write_text(json.dumps(bare))  # the process's summary alone
    every["a/point_robot/seed1"].path.write_text(json.dumps({**result("a/point_robot/seed1"), "config_hash": "0" * 16}))
    def before_the_hash(label):  # then the process wrote the cell's JSON itself, and the command said so
        summary = {k: v for k, v in result(label).items() if k != "config_hash"}
        return {**summary, "command": summary["command"].replace(".partial.json", ".json")}

    legacy = before_the_hash("b/point_robot/seed0")
    assert legacy["command"] == shlex.join(["promptdiff", *bench.command(cfg, every["b/point_robot/seed0"])])
    every["b/point_robot/seed0"].path.write_text(json.dumps(legacy))  # today's command: kept
    legacy_written = every["b/point_robot/seed0"].path.stat().st_mtime_ns
    other = before_the_hash("b/point_robot/seed1")
    other["command"] = other["command"].replace(" --x=1 ", " --x=2 ")  # another command: rerun
    every["b/point_robot/seed1"].path.write_text(json.dumps(other))
    assert {k for k, c in every.items() if bench.read_cell(cfg, c) is None} == {
        "a/point_robot/seed0", "a/point_robot/seed1", "b/point_robot/seed1"}

    run(cfg, progress=False, tables_only=True)
    table = (tmp_path / "redo" / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| point_robot |"))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["missing", "-1.0 ± 0.0 (1/2 seeds)"]
    assert "| wall time, all cells (min) | — | < 0.1 |" in table and "0.0" not in table.split("wall time")[1]

    rerun = run(cfg, progress=False)
    assert started() == sorted([*every, "a/point_robot/seed0", "a/point_robot/seed1", "b/point_robot/seed1"])
    assert rerun["done"] == 3 and rerun["skipped"] == 1
    assert every["b/point_robot/seed0"].path.stat().st_mtime_ns == legacy_written
    assert all(bench.read_cell(cfg, c) for c in every.values())

    # a method's arguments or the preset changed: its cells (all, for the episodes) are no longer done
    changed = replace(cfg, methods=[cfg.methods[0], MethodSpec("b", cfg.methods[1].config, ["--x=1", "--y=2"])])
    assert [c.label for c in cells(changed) if bench.read_cell(changed, c) is None] == [
        "b/point_robot/seed0", "b/point_robot/seed1"]
    assert not any(bench.read_cell(replace(cfg, episodes=cfg.episodes + 1), c) for c in cells(cfg))


def test_shipped_results_stay_done_when_their_command_is_todays():
    """Cells written before the config hash count when the command they record is today's for the cell; the
    shipped Table 1 keeps those cells (and a run from elsewhere sees the same cells)."""
    cfg = load(TABLE1)
    every = cells(cfg)
    kept = [c for c in every if bench.read_cell(cfg, c) is not None]
    assert kept
    for c in every:
        summary = json.loads(c.path.read_text()) if c.path.is_file() else {}
        if "command" in summary and "config_hash" not in summary:
            today = shlex.join(["promptdiff", *bench.command(cfg, c)])
            assert (c in kept) == (summary["command"] == today), c.label
    elsewhere = replace(cfg, out_dir=str(ROOT / cfg.out_dir))
    assert len([c for c in cells(elsewhere) if bench.read_cell(elsewhere, c)]) == len(kept)
