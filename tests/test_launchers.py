"""`promptdiff benchmark --launcher slurm|submitit_local`: the cells that are not done go to one submitit job
array. SLURM is stood in for by a fake `sbatch` (and `srun`, which submitit looks for) on PATH that records the
script it is given; submitit_local runs two real quick cells (Table 1's quick preset, shrunk) and resumes."""

import contextlib
import io
import json
import os
import shlex
import sys
import types
from pathlib import Path

import pytest
import yaml

import promptdiff.benchmark as bench
from promptdiff.benchmark import BenchmarkConfig, MethodSpec, cells, resolve
from promptdiff.cli.main import main

from test_pretrain import ROOT

submitit = pytest.importorskip("submitit")

TABLE1 = ROOT / "conf" / "benchmark" / "table1.yaml"
JOB_ID = "12345"
FAKE_SBATCH = f"""#!/bin/sh
# stands in for sbatch: keeps its arguments and the script it was given, answers like sbatch
n=$(ls "$FAKE_SBATCH_DIR" | grep -c '^script')
printf '%s\\n' "$@" > "$FAKE_SBATCH_DIR/args$n.txt"
cp "$1" "$FAKE_SBATCH_DIR/script$n.sh"
echo "Submitted batch job {JOB_ID}"
"""


def load(path: Path, **overrides) -> BenchmarkConfig:
    """A benchmark YAML as `promptdiff benchmark` builds it (methods as MethodSpec)."""
    d = yaml.safe_load(Path(path).read_text())
    d["methods"] = [MethodSpec(**m) for m in d["methods"]]
    d.update(overrides)
    return BenchmarkConfig(**d)


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """The benchmark configs name their training configs and data relative to the repository root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` and `srun` stand-ins first on PATH; returns the folder where sbatch leaves what it was given."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch_calls"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(record))
    return record


def finalise(cfg: BenchmarkConfig, cell, ret: float = -5.0) -> None:
    """Make `cell` done the way the benchmark does it: a rollout summary in its partial JSON, then finish_cell."""
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    cell.partial.write_text(json.dumps({"family": cell.family, "seed": cell.seed, "primary": "tuned",
                                        "tuned_parameters": 1, "sets": {"tuned": {"return_mean": ret}}}))  # fmt: skip
    argv = bench.command(cfg, cell, final_json=cell.partial)
    ok, _ = bench.finish_cell(cfg, bench.Running(cell, argv, types.SimpleNamespace(returncode=0), 1, 0.0))
    assert ok and bench.read_cell(cfg, cell) is not None


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_slurm_submits_the_unfinished_quick_cells_as_one_array(tmp_path, fake_slurm, monkeypatch):
    monkeypatch.setenv("PROMPTDIFF_PLUGINS", "")  # what the array tasks are to load, recorded at submission
    cfg = resolve(load(TABLE1, out_dir=str(tmp_path)), quick=True)
    every = cells(cfg)
    finalise(cfg, every[0])  # one quick cell is done already: it must not be submitted
    todo = every[1:]
    assert len(todo) >= 2

    rc, out, err = _main(["benchmark", "--config", str(TABLE1), "--quick", "--out_dir", str(tmp_path),
                          "--launcher", "slurm", "--slurm.partition", "testpart", "--slurm.time", "30",
                          "--slurm.cpus_per_task", "2", "--slurm.array_parallelism", "3",
                          "--slurm.slurm_additional_parameters", '{"account": "acct"}'])  # fmt: skip
    assert rc == 0, err[-3000:]
    assert f"job array {JOB_ID}" in err and "--tables_only" in err

    # one sbatch call, on one array script with the job's settings
    scripts = sorted(fake_slurm.glob("script*.sh"))
    assert len(scripts) == 1
    script = scripts[0].read_text()
    flags = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for flag in ("--partition=testpart", "--time=30", f"--array=0-{len(todo) - 1}%3", "--cpus-per-task=2",
                 "--account=acct", "--job-name=promptdiff_table1_quick"):
        assert f"#SBATCH {flag}" in flags, (flag, flags)
    folder = tmp_path / cfg.name / "submitit"
    assert f"-m submitit.core._submit {folder}" in script

    # which task runs which cell: the mapping we write, and the pickled task itself
    mapping = json.loads((folder / f"{JOB_ID}_cells.json").read_text())
    assert mapping["job_id"] == JOB_ID and mapping["launcher"] == "slurm" and mapping["threads_per_cell"] == 2
    assert [t["job_id"] for t in mapping["tasks"]] == [f"{JOB_ID}_{i}" for i in range(len(todo))]
    assert [t["cell"] for t in mapping["tasks"]] == [c.label for c in todo]
    for i, cell in enumerate(todo):
        pickled = submitit.core.utils.JobPaths(folder, job_id=f"{JOB_ID}_{i}").submitted_pickle
        task = submitit.core.utils.DelayedSubmission.load(pickled).function
        assert isinstance(task, bench.CellTask) and task.cell.label == cell.label
        assert task.threads == 2 and task.cwd == str(ROOT) and task.program == bench.PROGRAM
        assert bench.command(task.cfg, task.cell) == bench.command(cfg, cell)  # the local pool's command
        assert bench.config_hash(task.cfg, task.cell) == bench.config_hash(cfg, cell)
        assert task.cfg.slurm["partition"] == "testpart" and hasattr(task, "checkpoint")  # requeued by submitit

    # nothing ran here: no cell JSON, no tables; runs.json records the submission
    assert all(not c.path.exists() and not c.path.with_suffix(".log").exists() for c in todo)
    assert not (tmp_path / cfg.name / "table.md").exists()
    runs = json.loads((tmp_path / cfg.name / "runs.json").read_text())
    assert len(runs) == 1 and runs[0]["launcher"] == "slurm" and runs[0]["job_id"] == JOB_ID
    assert runs[0]["cells_todo"] == len(todo) and runs[0]["threads_per_cell"] == 2
    # and the tables, rebuilt later, name the submission
    assert bench.run(cfg, tables_only=True, progress=False)["done"] == 0
    assert f"job {JOB_ID}, {len(todo)} cells x 2 thread(s)" in (tmp_path / cfg.name / "table.md").read_text()


def test_slurm_without_sbatch_or_submitit_fails_in_one_line(tmp_path, monkeypatch):
    args = ["benchmark", "--config", str(TABLE1), "--quick", "--out_dir", str(tmp_path), "--launcher", "slurm"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    rc, _, err = _main(args)
    assert rc == 2 and err.strip().count("\n") == 0 and "sbatch and srun not found" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    for launcher in ("slurm", "submitit_local"):
        rc, _, err = _main([*args[:-1], launcher])
        assert rc == 2 and err.strip().count("\n") == 0, err
        assert err.startswith("promptdiff: error:") and 'pip install -e ".[slurm]"' in err
    assert not (tmp_path / "table1_quick").exists()
    rc, _, err = _main([*args, "--slurm.partiton", "typo"])
    assert rc == 2 and "unknown option(s) ['partiton']" in err


def test_submitit_local_runs_the_array_then_resumes(tmp_path, monkeypatch):
    """Table 1's quick preset with one evaluation episode: its cells run as one local submitit array, their JSONs
    and the tables are written; a second invocation submits nothing."""
    preset = yaml.safe_load(TABLE1.read_text())
    preset["quick_preset"].update(episodes=1)
    config = tmp_path / "table1_mini.yaml"
    config.write_text(yaml.safe_dump(preset))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["benchmark", "--config", str(config), "--quick", "--out_dir", str(tmp_path), "--launcher", "submitit_local"]
    rc, out, err = _main(args)
    assert rc == 0, err[-3000:]
    cfg = resolve(load(config, out_dir=str(tmp_path)), quick=True)
    every = cells(cfg)
    assert [c.method.name for c in every] == list(preset["quick_preset"]["methods"])
    for cell in every:
        summary = bench.read_cell(cfg, cell)
        assert summary is not None, cell.path.with_suffix(".log").read_text()[-2000:]
        assert summary["config_hash"] == bench.config_hash(cfg, cell) and summary["threads"] == 1
        assert summary["wall_time_s"] > 0 and summary["episodes"] == 1 and not cell.partial.exists()
        assert summary["command"] == shlex.join(["promptdiff", *bench.command(cfg, cell, final_json=cell.partial)])
        assert cell.path.with_suffix(".log").is_file()
    out_dir = tmp_path / cfg.name
    assert str(out_dir / "table.md") in out and "missing" not in (out_dir / "table.md").read_text()
    runs = json.loads((out_dir / "runs.json").read_text())
    assert len(runs) == 1 and runs[0]["launcher"] == "submitit_local" and runs[0]["finished"]
    assert runs[0]["cells_done"] == len(every) and runs[0]["cells_failed"] == 0
    mapping = json.loads((out_dir / "submitit" / f"{runs[0]['job_id']}_cells.json").read_text())
    assert [t["cell"] for t in mapping["tasks"]] == [c.label for c in every]

    # resume: everything is done, nothing is submitted, the tables are rewritten
    monkeypatch.setattr(bench, "submit_cells", lambda *a: pytest.fail("cells were submitted"))
    before = {c.label: c.path.stat().st_mtime_ns for c in every}
    rc, _, err = _main(args)
    assert rc == 0, err[-3000:]
    assert {c.label: c.path.stat().st_mtime_ns for c in every} == before
    assert len(json.loads((out_dir / "runs.json").read_text())) == 1


def test_an_array_task_skips_a_cell_that_is_done(tmp_path):
    """A requeued task (or one whose cell another run finished) runs nothing."""
    cfg = BenchmarkConfig(name="t", methods=[MethodSpec("m", "conf/baselines/prompt_dt.yaml")],
                          families=["point_robot"], seeds=[0], out_dir=str(tmp_path))  # fmt: skip
    cell = cells(cfg)[0]
    finalise(cfg, cell)
    task = bench.CellTask(cfg, cell, 1, ("false",), str(ROOT))  # `false` would fail the cell if it ran
    assert task() == {"cell": cell.label, "ok": True, "ran": False}
    cell.path.unlink()
    with pytest.raises(bench.CellFailed, match="cell m/point_robot/seed0 failed"):
        task()
    assert not cell.path.exists() and cell.path.with_suffix(".log").is_file()


def test_a_submission_that_sbatch_refuses_is_one_line(tmp_path, fake_slurm):
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n")
    rc, _, err = _main(["benchmark", "--config", str(TABLE1), "--quick", "--out_dir", str(tmp_path),
                        "--launcher", "slurm", "--slurm.partition", "nope"])  # fmt: skip
    ours = [line for line in err.splitlines() if line.startswith("promptdiff:")]  # (submitit echoes sbatch's stderr)
    assert rc == 2 and len(ours) == 1, err
    assert ours[0].startswith("promptdiff: error: --launcher slurm: the job array was not submitted") and "nope" in ours[0]
    assert not list((tmp_path / "table1_quick" / "cells").rglob("*.json"))
