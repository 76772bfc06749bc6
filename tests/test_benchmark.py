"""`promptdiff benchmark`: the quick Table 1 end to end (run once, shared), resuming, and the pure
table functions on hand-written cell JSONs."""

import contextlib
import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

import promptdiff.benchmark as bench
from promptdiff.benchmark import BenchmarkConfig, MethodSpec, cells, collect, markdown, relative, resolve, run
from promptdiff.cli.main import main

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
    real_run_cell = bench.run_cell
    monkeypatch.setattr(bench, "run_cell", lambda cfg, cell, threads: ran.append(cell.label) or real_run_cell(cfg, cell, threads))

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
    result = run(cfg0, quick=True, workers=WORKERS, progress=False)
    assert sorted(ran) == sorted([redo.label, *retried])
    assert result["done"] == 1 and result["failed"] == retried and result["skipped"] == len(every) - 1 - len(retried)
    after = mtimes()
    assert redo.path.is_file() and after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != redo.label} == {k: v for k, v in before.items() if k != redo.label}
    assert json.loads(redo.path.read_text())["benchmark_method"] == "mt_orl"
    runs = json.loads(runs_path.read_text())
    assert runs[0] == first[0] and runs[-1]["cells_done"] == 1 and runs[-1]["finished"]
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


def _cell_json(path: Path, ret: float, score: float, params: int = 7, wall: float = 30.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "primary": "tuned", "tuned_parameters": params, "wall_time_s": wall, "command": f"promptdiff fit # {path.stem}",
        # a decoy set: the tables must read the primary one
        "sets": {"tuned": {"return_mean": ret, "score_mean": score}, "expert": {"return_mean": 1e6, "score_mean": 1e6}},
    }))  # fmt: skip


def test_collect_and_markdown_on_hand_written_cells(tmp_path):
    methods = [MethodSpec("ref", "a.yaml"), MethodSpec("partial", "b.yaml"), MethodSpec("absent", "c.yaml")]
    cfg = BenchmarkConfig(name="t", methods=methods, families=["point_robot"], seeds=[0, 1], episodes=4,
                          reference="ref", out_dir=str(tmp_path))  # fmt: skip
    every = cells(cfg)
    path = {(c.method.name, c.seed): c.path for c in every}
    ref_ret, ref_score = [-4.0, -6.5], [0.9, 0.7]
    for s in (0, 1):
        _cell_json(path[("ref", s)], ref_ret[s], ref_score[s], wall=60.0)
    _cell_json(path[("partial", 0)], -2.5, 0.95, params=11)

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
            _cell_json(c.path, r[c.seed], r[c.seed] / 100)
    md = markdown(cfg, collect(cfg, every)).splitlines()
    first = md.index(next(line for line in md if line.startswith("| average |")))
    assert [c.strip() for c in md[first].split("|")[2:-1]] == [f"{np.mean([-4, -6, 100, 110]):.1f}", "—"]
    assert md[first + 1].startswith("| average over point_robot (complete for every method) |")
    assert [c.strip() for c in md[first + 1].split("|")[2:-1]] == ["-5.0", "-4.0"]


def test_tables_only_runs_nothing_and_tabulates_the_cells_that_exist(tmp_path, monkeypatch, capsys):
    """`--tables_only`: cells copied in from elsewhere are tabulated; missing ones show as missing, none runs."""
    monkeypatch.setattr(bench, "run_cell", lambda *a: pytest.fail("a cell ran"))
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "families": ["point_robot"], "seeds": [0, 1], "out_dir": str(tmp_path),
                                      "reference": "prompt_dt", "methods": [
                                          {"name": "prompt_dt", "config": "conf/baselines/prompt_dt.yaml"},
                                          {"name": "mt_orl", "config": "conf/baselines/mt_orl.yaml"}]}))  # fmt: skip
    cfg = load(config)
    path = {(c.method.name, c.seed): c.path for c in cells(cfg)}
    _cell_json(path[("prompt_dt", 0)], -4.0, 0.9)
    _cell_json(path[("prompt_dt", 1)], -6.0, 0.8)
    assert main(["benchmark", "--config", str(config), "--tables_only"]) == 0
    assert not path[("mt_orl", 0)].exists() and not path[("mt_orl", 0)].with_suffix(".log").exists()
    md = (tmp_path / "t" / "table.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| point_robot |"))
    assert [c.strip() for c in line.split("|")[2:-1]] == ["-5.0 ± 1.0", "missing"]
    assert "INCOMPLETE" in md and str(tmp_path / "t" / "table.md") in capsys.readouterr().out


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

    monkeypatch.setattr(bench, "run_cell", no_cell)
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
