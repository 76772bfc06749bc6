"""`promptdiff benchmark`: methods x families x seeds, each cell one `promptdiff fit` run, then tables.

A benchmark config (conf/benchmark/*.yaml) names the families, the seeds and the methods; a
method is a training config plus extra command-line arguments, in which `{family}` and `{seed}`
are replaced per cell:

    name: table1
    families: [cheetah_dir, ant_dir]
    seeds: [0, 1, 2]
    episodes: 20
    methods:
      - {name: prompt_dt, config: conf/baselines/prompt_dt.yaml}
      - {name: prompt_diffuser, config: "conf/{family}.yaml", args: ["--model.init_args.sample_seed={seed}"]}
    quick_preset: {families: [point_robot], seeds: [0], episodes: 3, methods: {prompt_diffuser: ["--trainer.max_steps=30"]}}

Every cell runs, in its own process,

    promptdiff fit --config <config> --data.init_args.family <family> --seed_everything <seed>
                   --data.init_args.seed <seed> <args> --trainer.logger false ... --trainer.callbacks
                   [RolloutCallback(episodes, seed, prompt_seed = <seed>, final_json = <cell>.partial.json, primary_only)]

so the seed changes the method's initialisation, its data stream, its prompt and the evaluation
episodes, and every method of one seed sees the same prompt-pool trajectory and the same episodes.

A cell is done when its JSON `<cell>.json` is complete and was made by the cell's current config.
The process writes only the rollout summary, to `<cell>.partial.json`; when it exits successfully
the benchmark adds the method, the command, the config hash, the wall time and the threads, and
writes `<cell>.json` atomically. The config hash covers the cell's `fit` arguments (training config
path, family, seed, episodes, the method's arguments, the evaluation callback) but not the cell's
location, so changing a method's arguments or the preset reruns its cells, and a moved results
folder keeps them; it does not cover the contents of the config files, the code or the data (delete
the cells to rerun them after such a change). A JSON from before the hash counts when the command it
records hashes the same. A rerun runs every cell that is not done: missing, failed, incomplete (e.g.
written by a process whose benchmark was killed) or made by another config; tables show only done
cells.

Each cell's process runs in a session of its own and, on Linux, dies with the benchmark. Ctrl-C
stops the benchmark: the queued cells are cancelled, the running ones' process groups terminated,
runs.json records the invocation as interrupted, and the command exits with status 130 (SIGTERM, e.g. a
preempted job: the same, status 143); rerunning
the same command resumes.

Outputs, under `<out_dir>/<name>` (`<name>_quick` with --quick): `cells/<method>/<family>/seed<s>.json`
(+ `.log`, and `seed<s>/config.yaml`: the cell's fully resolved config), `table.md`, `table.csv` (one row per method and family: mean and std over seeds) and
`table.png` (normalised score per family and method). Methods whose cell failed or is missing
are shown as such, never averaged over fewer seeds silently.

`runs.json` records every invocation that ran cells: start, launcher, elapsed wall-clock time (updated
after each finished cell, so a run that is killed keeps its record up to its last finished cell), cells
finished and failed (and, when interrupted, stopped and not started), workers, threads and the
machine. A table run in several sittings (resumed) is timed by the sum of its invocations' elapsed
times; table.md reports it.

Launchers (`launcher`, `--launcher`). "local" (the default): the pool above, `workers` cells at a time on
this machine. "submitit_local" and "slurm" hand the cells that are not done to submitit as ONE job array
(`pip install -e ".[slurm]"`): array task i runs `CellTask` for one cell, which runs the very same cell
process as the pool (`start_cell`: the same command, `<cell>.log`, OMP_NUM_THREADS, PROMPTDIFF_PLUGINS, the
working directory of the submission) and finalises it the same way (`finish_cell`: the partial JSON becomes
`<cell>.json` with the config hash, wall time and threads). A task whose cell is done by the time it starts
(e.g. a requeued one) runs nothing; submitit requeues a task that is preempted or times out, and a rerun of
the benchmark submits only the cells that are still not done. "slurm" submits through `sbatch` and
returns, printing the job id (write the tables once the array has finished: the same command plus
`--tables_only`); "submitit_local" runs the array on this machine, all its tasks at once (submitit's local
executor has no array throttle), waits for it and writes the tables. `slurm` (a dict, YAML or
`--slurm.<key> value`) sets the job: partition, time (minutes; also the local executor's timeout), cpus_per_task
(each cell's threads), gpus_per_node, mem_gb, array_parallelism (array tasks running at once),
slurm_additional_parameters (any other #SBATCH option, e.g. {account: a, qos: q}), setup (shell lines run
before each task, e.g. activating the environment) and folder (submitit's pickles and logs, by default
`<out_dir>/<name>/submitit`; it holds `<job id>_cells.json`, which array task runs which cell). The
cluster's nodes need the same checkout and environment at the same paths as the submitting machine.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from promptdiff.lifetime import arm_death_signal

PROGRAM = (sys.executable, "-m", "promptdiff.cli.main")
"""The program every cell runs, followed by the cell's `fit` arguments (tests put a stand-in here)."""
LAUNCHERS = ("local", "submitit_local", "slurm")
"""Where the cells run: this process's pool, or one submitit job array (on this machine, or on SLURM)."""
SLURM_OPTIONS = {"partition": str, "time": int, "cpus_per_task": int, "gpus_per_node": int, "mem_gb": float,
                 "array_parallelism": int, "slurm_additional_parameters": dict, "setup": list, "folder": str}
"""The keys of `slurm` and their types (values given on the command line arrive as strings)."""
SLURM_DEFAULT_TIME_MIN = 240
"""Time limit of one array task (one cell) when `slurm.time` is not given."""
SUBMITIT_HINT = 'pip install -e ".[slurm]"'
"""How to get the submitit launchers' one dependency."""
_POLL_S = 0.2
"""How often the running cells are checked."""
_GRACE_S = 5.0
"""After Ctrl-C, how long the running cells get to exit after SIGTERM before SIGKILL."""
_HERE = "{cell}"
"""What stands for the cell's own location in the command that the config hash covers."""


@dataclass
class MethodSpec:
    name: str
    """Column label of the method (also its folder under cells/)."""
    config: str
    """Training config; `{family}` is replaced (e.g. conf/{family}.yaml)."""
    args: list[str] = field(default_factory=list)
    """Extra `promptdiff fit` arguments; `{family}` and `{seed}` are replaced."""


@dataclass
class BenchmarkConfig:
    name: str
    """Name of the benchmark: results go to <out_dir>/<name>/."""
    methods: list[MethodSpec]
    """Methods (table columns), in order."""
    families: list[str]
    """Task families (table rows)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds of every cell."""
    episodes: int = 20
    """Evaluation episodes per test task."""
    reference: str | None = "prompt_dt"
    """Method every other one is compared with (ratios in table.md); None: no ratio table."""
    out_dir: str = "results"
    """Root of the results."""
    workers: int = 1
    """Cells run at once (local launcher)."""
    focus: str | None = None
    """The method table.md compares with every other by probability of improvement and IQM difference (with
    95% CIs); default: prompt_diffuser if the benchmark has it, else the first method."""
    threads: int | None = None
    """Torch/OpenMP threads of each cell's process (OMP_NUM_THREADS and MKL_NUM_THREADS are set for it); default:
    OMP_NUM_THREADS if set, else cores / workers (local) or slurm.cpus_per_task. Recorded in every cell JSON and
    in runs.json. Cells that together ask for more threads than there are cores run many times slower."""
    quick_preset: dict | None = None
    """Overrides for --quick: families, seeds, episodes, and methods: {name: extra args}; methods not
    listed there are left out of the quick run."""
    launcher: Literal["local", "submitit_local", "slurm"] = "local"
    """Where the cells run: local (a pool of `workers` processes here), submitit_local (one submitit job array
    on this machine; waits, then writes the tables) or slurm (one SLURM job array through submitit; submits and
    returns: then rerun with --tables_only once it has finished). The submitit ones need pip install -e ".[slurm]"."""
    slurm: dict | None = None
    """The job of the submitit launchers: partition, time (minutes per cell, default 240), cpus_per_task (threads
    per cell), gpus_per_node, mem_gb, array_parallelism (tasks at once), slurm_additional_parameters (more #SBATCH
    options, a dict), setup (shell lines before each task) and folder (submitit's files, default
    <out_dir>/<name>/submitit); e.g. --slurm.partition gpu --slurm.time 120."""


def resolve(cfg: BenchmarkConfig, quick: bool) -> BenchmarkConfig:
    """The config the run uses: with `quick`, the quick overrides applied and the name suffixed."""
    if not quick:
        return cfg
    q = dict(cfg.quick_preset or {})
    if not q:
        raise ValueError(f"benchmark {cfg.name!r} has no `quick_preset` section")
    extra = q.get("methods") or {}
    unknown = sorted(set(extra) - {m.name for m in cfg.methods})
    if unknown:
        raise ValueError(f"quick_preset.methods names unknown methods {unknown}")
    methods = [MethodSpec(m.name, m.config, [*m.args, *(extra[m.name] or [])]) for m in cfg.methods if m.name in extra]
    return BenchmarkConfig(name=f"{cfg.name}_quick", methods=methods, families=list(q.get("families", cfg.families)),
                           seeds=list(q.get("seeds", cfg.seeds)), episodes=int(q.get("episodes", cfg.episodes)),
                           reference=cfg.reference, out_dir=cfg.out_dir, workers=cfg.workers, threads=cfg.threads,
                           focus=cfg.focus,
                           launcher=cfg.launcher, slurm=cfg.slurm)  # fmt: skip


@dataclass
class Cell:
    method: MethodSpec
    family: str
    seed: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.method.name}/{self.family}/seed{self.seed}"

    @property
    def partial(self) -> Path:
        """Where the cell's process writes its rollout summary (never read as a result)."""
        return self.path.with_name(f"{self.path.stem}.partial.json")


def cells(cfg: BenchmarkConfig) -> list[Cell]:
    root = Path(cfg.out_dir) / cfg.name / "cells"
    return [Cell(m, f, s, root / m.name / f / f"seed{s}.json") for f in cfg.families for m in cfg.methods for s in cfg.seeds]


def command(cfg: BenchmarkConfig, cell: Cell, final_json: Path | None = None) -> list[str]:
    """The `promptdiff fit` arguments of one cell, its rollout summary written to `final_json` (default: the
    cell's JSON)."""
    fill = {"family": cell.family, "seed": cell.seed}
    callback = {"class_path": "promptdiff.callbacks.RolloutCallback",
                "init_args": {"every_n_val_epochs": 1_000_000, "episodes": cfg.episodes, "seed": cell.seed,
                              "prompt_seed": cell.seed, "final_table": True, "primary_only": True,
                              "final_json": str(final_json or cell.path)}}  # fmt: skip
    return ["fit", "--config", cell.method.config.format(**fill), f"--data.init_args.family={cell.family}",
            f"--seed_everything={cell.seed}", f"--data.init_args.seed={cell.seed}",
            *[a.format(**fill) for a in cell.method.args],
            "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={cell.path.with_suffix('')}",  # the cell's resolved config.yaml lands there
            f"--trainer.callbacks={json.dumps([callback])}"]  # fmt: skip


def config_hash(cfg: BenchmarkConfig, cell: Cell) -> str:
    """What defines the cell, hashed: its `fit` arguments with its own location written as `{cell}`."""
    return _hash(command(cfg, replace(cell, path=Path(f"{_HERE}.json"))))


def _hash(argv: list[str]) -> str:
    return hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:16]


def _recorded_hash(recorded: str) -> str | None:
    """The config hash of the command recorded in a cell JSON from before the hash (None: not a cell's command)."""
    try:
        argv = shlex.split(recorded)
    except ValueError:
        return None
    roots = [a.split("=", 1)[1] for a in argv if a.startswith("--trainer.default_root_dir=")]
    if argv[:2] != ["promptdiff", "fit"] or len(roots) != 1:
        return None
    return _hash([a.replace(roots[0], _HERE) for a in argv[1:]])


def _complete(summary: object) -> bool:
    """A rollout summary with the set the tables read."""
    sets = summary.get("sets") if isinstance(summary, dict) else None
    return isinstance(sets, dict) and summary.get("primary") in sets


def read_cell(cfg: BenchmarkConfig, cell: Cell) -> dict | None:
    """The cell's result if the cell is done, else None (missing, unreadable, incomplete or made by another config).

    Done: the JSON holds a rollout summary plus what the benchmark adds after a successful run (method, command,
    wall time), and its config hash (or, from before the hash, the hash of its recorded command) is the cell's."""
    try:
        summary = json.loads(cell.path.read_text())
    except (OSError, ValueError):
        return None
    if not _complete(summary) or summary.get("benchmark_method") != cell.method.name:
        return None
    wall, recorded = summary.get("wall_time_s"), summary.get("command")
    if not isinstance(wall, (int, float)) or not wall > 0 or not isinstance(recorded, str):
        return None
    made_by = summary["config_hash"] if "config_hash" in summary else _recorded_hash(recorded)
    return summary if made_by == config_hash(cfg, cell) else None


# -- running cells ----------------------------------------------------------------------------------
@dataclass
class Running:
    """A cell whose process has been started."""

    cell: Cell
    argv: list[str]
    proc: subprocess.Popen
    threads: int
    start: float


def start_cell(cfg: BenchmarkConfig, cell: Cell, threads: int, program: tuple[str, ...] | None = None) -> Running:
    """Start one cell's process (output to `<cell>.log`, rollout summary to `<cell>.partial.json`), in a
    session of its own, so that Ctrl-C reaches only the benchmark, which then stops the cell's process group.
    `program`: what runs the `fit` arguments (default PROGRAM)."""
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    _remove_partial(cell)  # left by a process of an earlier run that was killed
    argv = command(cfg, cell, final_json=cell.partial)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(cell.path.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen([*(program or PROGRAM), *argv], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_dies_with(os.getpid()))  # fmt: skip
    return Running(cell, argv, proc, threads, time.perf_counter())


def finish_cell(cfg: BenchmarkConfig, running: Running) -> tuple[bool, float]:
    """Accept a cell whose process has exited: when it exited with 0 and left a rollout summary, write the cell's
    JSON (the summary plus method, command, config hash, wall time, threads) atomically. Returns (ok, wall time)."""
    cell, wall = running.cell, time.perf_counter() - running.start
    try:
        summary = json.loads(cell.partial.read_text()) if running.proc.returncode == 0 else None
    except (OSError, ValueError):
        summary = None
    if _complete(summary):
        summary.update(benchmark_method=cell.method.name, command=shlex.join(["promptdiff", *running.argv]),
                       config_hash=config_hash(cfg, cell), wall_time_s=wall, threads=running.threads)  # fmt: skip
        _atomic_write(cell.path, json.dumps(summary, indent=1) + "\n")
    _remove_partial(cell)
    return _complete(summary), wall


def run_cell(cfg: BenchmarkConfig, cell: Cell, threads: int,
             program: tuple[str, ...] | None = None) -> tuple[bool, float]:
    """Run one cell to its end in this process's care and finalise it: `start_cell`, wait, `finish_cell`, as the
    local pool does it cell by cell (an exception or a signal meanwhile stops the cell's process group first)."""
    running = start_cell(cfg, cell, threads, program)
    try:
        running.proc.wait()
    except BaseException:
        _stop([running])
        raise
    return finish_cell(cfg, running)


def _remove_partial(cell: Cell) -> None:
    cell.partial.unlink(missing_ok=True)
    cell.partial.with_name(cell.partial.name + ".tmp").unlink(missing_ok=True)


def _dies_with(parent: int):
    """On Linux, a `preexec_fn` that has the cell's process killed when the benchmark process dies (elsewhere None:
    such a process still never makes a done cell, since only the benchmark writes a cell's JSON)."""
    return functools.partial(arm_death_signal, parent) if sys.platform.startswith("linux") else None


def _stop(running: list[Running]) -> None:
    """Terminate the running cells' process groups (SIGTERM, then SIGKILL after a grace period) and remove their
    partial output; a second Ctrl-C meanwhile is ignored."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        previous = None
    try:
        for r in running:
            _signal_group(r.proc, signal.SIGTERM)
        deadline = time.monotonic() + _GRACE_S
        for r in running:
            try:
                r.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for r in running:
            _signal_group(r.proc, signal.SIGKILL)  # what the cell started (e.g. vector-env workers) too
            r.proc.wait()
            _remove_partial(r.cell)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class Terminated(Exception):
    """The benchmark received SIGTERM (e.g. the job it runs in was preempted): handled like Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (main thread only); returns the previous handler."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the cell's session leader: its process group has its pid
    except ProcessLookupError:
        pass


def run(cfg: BenchmarkConfig, quick: bool = False, workers: int | None = None, progress: bool = True,
        tables_only: bool = False) -> dict:
    """Run the cells that are not done, then write the tables; returns {"done", "failed", "skipped", "outputs"}.

    `tables_only`: run nothing, only (re)write the tables from the cells that are done (e.g. cells copied in
    from another machine); the others show as missing. Ctrl-C: the queued cells are cancelled, the running
    ones stopped, runs.json records the interruption, and SystemExit(130) is raised after a one-line message.

    With a submitit launcher (`cfg.launcher`) the cells that are not done go to one job array instead: "slurm"
    returns once it is submitted (no tables; the result also has "submitted": see submit_cells),
    "submitit_local" waits for it and then writes the tables."""
    from tqdm import tqdm

    cfg = resolve(cfg, quick)
    _check(cfg)
    if cfg.launcher != "local" and not tables_only:
        _import_submitit(cfg.launcher)  # before anything is written
    every = cells(cfg)
    done = {c.label for c in every if read_cell(cfg, c) is not None}
    stale = [c for c in every if c.label not in done and c.path.is_file()]
    if stale:
        print(f"promptdiff: {len(stale)} cell JSON(s) of {cfg.name} are incomplete or were made by another "
              f"config (e.g. {stale[0].path}): {'not counted' if tables_only else 'rerunning them'}",
              file=sys.stderr)  # fmt: skip
    todo = [] if tables_only else [c for c in every if c.label not in done]
    workers = max(1, int(workers or cfg.workers))
    threads = int(cfg.threads or os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    failed = []
    if todo and cfg.launcher == "slurm":
        submitted = submit_cells(cfg, todo)
        print(f"promptdiff: submitted {len(todo)} cells of {cfg.name} to SLURM as job array {submitted['job_id']} "
              f"(submitit's files: {submitted['folder']}); once it has finished, write the tables with the same "
              f"command plus --tables_only (e.g. promptdiff benchmark --config CONFIG{' --quick' if quick else ''} "
              f"--tables_only); the same command without it resubmits the cells that are not done",
              file=sys.stderr)  # fmt: skip
        return {"done": 0, "failed": [], "skipped": len(done), "outputs": {}, "submitted": submitted}
    if todo and cfg.launcher == "submitit_local":
        failed = _run_submitit_local(cfg, todo, progress)
    elif todo:
        log = RunLog(Path(cfg.out_dir) / cfg.name / "runs.json", todo=len(todo), workers=workers, threads=threads)
        bar = tqdm(total=len(todo), desc=f"{cfg.name}: cells", unit="cell", disable=not progress)
        queue, running = list(todo), []
        previous_term = _on_sigterm(_terminate)
        try:
            while queue or running:
                while queue and len(running) < workers:
                    running.append(start_cell(cfg, queue.pop(0), threads))
                time.sleep(_POLL_S)
                for r in [r for r in running if r.proc.poll() is not None]:
                    running.remove(r)
                    ok, wall = finish_cell(cfg, r)
                    log.cell_finished(ok)
                    bar.update(1)
                    bar.set_postfix_str(f"{r.cell.label} {'ok' if ok else 'FAILED'} {wall:.0f}s")
                    if not ok:
                        failed.append(r.cell)
                        log_file = r.cell.path.with_suffix(".log")
                        tqdm.write(f"cell {r.cell.label} failed: see {log_file}", file=sys.stderr)
        except (KeyboardInterrupt, Terminated) as stop:
            _stop(running)
            bar.close()
            log.interrupted(stopped=len(running))
            e = log.entry
            print(f"promptdiff: benchmark {cfg.name} interrupted ({e['cells_done']} cells finished, "
                  f"{e['cells_failed']} failed, {e['cells_stopped']} stopped, {e['cells_not_started']} not started); "
                  f"rerun the same command to resume", file=sys.stderr)  # fmt: skip
            raise SystemExit(128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)) from None
        except BaseException:  # an error here: no cell outlives the benchmark
            _stop(running)
            raise
        finally:
            _on_sigterm(previous_term)
        bar.close()
        log.close()
    outputs = write_tables(cfg, every)
    return {"done": len(todo) - len(failed), "failed": [c.label for c in failed], "skipped": len(done),
            "outputs": outputs}  # fmt: skip


# -- submitit launchers -------------------------------------------------------------------------------
class CellFailed(RuntimeError):
    """An array task's cell did not end with a done cell (its log says why)."""


@dataclass
class CellTask:
    """What array task i of a submitit launch runs: one cell, through `run_cell` (the local pool's
    `start_cell` + `finish_cell`), in the working directory and with the plugins of the submission. Picklable;
    submitit requeues it when its job is preempted or times out (`checkpoint`), and a task whose cell is done
    by the time it starts runs nothing."""

    cfg: BenchmarkConfig
    cell: Cell
    threads: int
    program: tuple[str, ...]
    cwd: str
    plugins: str | None = None

    def __call__(self) -> dict:
        from promptdiff.envs.families import PLUGIN_VARIABLE

        os.chdir(self.cwd)
        if self.plugins:
            os.environ[PLUGIN_VARIABLE] = self.plugins
        if read_cell(self.cfg, self.cell) is not None:
            return {"cell": self.cell.label, "ok": True, "ran": False}
        ok, wall = run_cell(self.cfg, self.cell, self.threads, self.program)
        if not ok:
            raise CellFailed(f"cell {self.cell.label} failed: see {self.cell.path.with_suffix('.log').resolve()}")
        return {"cell": self.cell.label, "ok": True, "ran": True, "wall_time_s": wall}

    def checkpoint(self, *args, **kwargs):
        """On preemption or timeout: requeue the same task (which then skips its cell if it got done)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def slurm_options(cfg: BenchmarkConfig) -> dict:
    """`cfg.slurm` checked, typed (command-line values arrive as strings) and completed with the defaults
    (time SLURM_DEFAULT_TIME_MIN, folder <out_dir>/<name>/submitit)."""
    import yaml

    given = dict(cfg.slurm or {})
    unknown = sorted(set(given) - set(SLURM_OPTIONS))
    if unknown:
        raise ValueError(f"slurm: unknown option(s) {unknown}; the options are {sorted(SLURM_OPTIONS)}")
    opts = {"time": SLURM_DEFAULT_TIME_MIN, "folder": str(Path(cfg.out_dir) / cfg.name / "submitit")}
    for key, kind in SLURM_OPTIONS.items():
        value = given.get(key)
        if value is None:
            continue
        if kind in (dict, list) and isinstance(value, str):
            value = yaml.safe_load(value)
            value = [value] if kind is list and isinstance(value, str) else value  # one setup line
        try:
            value = value if kind in (dict, list) else kind(value)
        except (TypeError, ValueError):
            value = None
        if not isinstance(value, kind) or isinstance(value, bool) or (kind in (int, float) and value <= 0):
            raise ValueError(f"slurm.{key}: expected a{' positive' if kind in (int, float) else ''} "
                             f"{kind.__name__}, got {given[key]!r}")  # fmt: skip
        opts[key] = value
    return opts


def _import_submitit(launcher: str):
    try:
        import submitit
    except ImportError:
        raise ImportError(f"--launcher {launcher} needs submitit, which is not installed: {SUBMITIT_HINT}") from None
    return submitit


def _submitit_threads(cfg: BenchmarkConfig, todo: list[Cell]) -> int:
    """Threads of each array task's cell: `threads` or slurm.cpus_per_task if given; else OMP_NUM_THREADS if set;
    else 1 on SLURM and, on this machine (where every task runs at once), its cores shared among the tasks."""
    given = cfg.threads or slurm_options(cfg).get("cpus_per_task") or os.environ.get("OMP_NUM_THREADS")
    if given:
        return int(given)
    return 1 if cfg.launcher == "slurm" else max(1, (os.cpu_count() or 1) // len(todo))


def submit_cells(cfg: BenchmarkConfig, todo: list[Cell]) -> dict:
    """Submit `todo` as one submitit job array (`cfg.launcher`: slurm or submitit_local), task i running
    CellTask(todo[i]); writes `<folder>/<job id>_cells.json` (which task runs which cell) and records the
    submission in runs.json. Returns {"job_id", "cells", "folder", "threads", "jobs"} (jobs: submitit's)."""
    import shutil

    from promptdiff.envs.families import PLUGIN_VARIABLE

    submitit = _import_submitit(cfg.launcher)
    opts = slurm_options(cfg)
    slurm = cfg.launcher == "slurm"
    if slurm:
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise FileNotFoundError(f"--launcher slurm: {' and '.join(missing)} not found: submit from a machine of "
                                    f"the SLURM cluster (or use --launcher submitit_local)")  # fmt: skip
    folder = Path(opts["folder"]).resolve()
    threads = _submitit_threads(cfg, todo)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if slurm else "local")
    params = {"name": f"promptdiff_{cfg.name}", "timeout_min": opts["time"], "cpus_per_task": threads}
    params.update({k: opts[k] for k in ("gpus_per_node", "mem_gb") if k in opts})
    if slurm:
        params.update({f"slurm_{k}": opts[k] for k in ("partition", "array_parallelism", "setup") if k in opts})
        if "slurm_additional_parameters" in opts:
            params["slurm_additional_parameters"] = opts["slurm_additional_parameters"]
    executor.update_parameters(**params)
    tasks = [CellTask(cfg, c, threads, tuple(PROGRAM), os.getcwd(), os.environ.get(PLUGIN_VARIABLE)) for c in todo]
    try:
        jobs = executor.submit_array(tasks)  # one array (one sbatch) for all the cells
    except (subprocess.CalledProcessError, submitit.core.utils.UncompletedJobError,
            submitit.core.utils.FailedSubmissionError) as err:  # e.g. sbatch refused the partition or time
        said = " ".join(str(err).split())
        raise ValueError(f"--launcher {cfg.launcher}: the job array was not submitted: {said[-500:]}") from None
    job_id = jobs[0].job_id.split("_")[0]
    mapping = {"job_id": job_id, "launcher": cfg.launcher, "benchmark": cfg.name, "threads_per_cell": threads,
               "tasks": [{"job_id": j.job_id, "cell": c.label, "json": str(c.path)} for j, c in zip(jobs, todo)]}
    _atomic_write(folder / f"{job_id}_cells.json", json.dumps(mapping, indent=1) + "\n")
    if slurm:
        log = RunLog(Path(cfg.out_dir) / cfg.name / "runs.json", todo=len(todo),
                     workers=min(len(todo), opts.get("array_parallelism", len(todo))), threads=threads,
                     launcher=cfg.launcher, job_id=job_id, submitit_folder=str(folder))  # fmt: skip
        log.close()  # the invocation ends with the submission; each cell's JSON holds its wall time
    return {"job_id": job_id, "cells": [c.label for c in todo], "folder": str(folder), "threads": threads,
            "jobs": jobs}  # fmt: skip


def _run_submitit_local(cfg: BenchmarkConfig, todo: list[Cell], progress: bool) -> list[Cell]:
    """Run `todo` as one submitit job array on this machine and wait for it; returns the cells that failed.
    A cell counts as done only by its JSON (read_cell), whatever its task returned. Ctrl-C/SIGTERM: the
    running tasks are cancelled (their cells die with them), runs.json records it, SystemExit(130/143)."""
    from tqdm import tqdm

    submitted = submit_cells(cfg, todo)
    pending = list(zip(submitted["jobs"], todo))
    log = RunLog(Path(cfg.out_dir) / cfg.name / "runs.json", todo=len(todo), workers=len(todo),
                 threads=submitted["threads"], launcher=cfg.launcher, job_id=submitted["job_id"],
                 submitit_folder=submitted["folder"])  # fmt: skip
    bar = tqdm(total=len(todo), desc=f"{cfg.name}: cells", unit="cell", disable=not progress)
    failed = []
    previous_term = _on_sigterm(_terminate)
    try:
        while pending:
            time.sleep(_POLL_S)
            for job, cell in [p for p in pending if p[0].done()]:
                pending.remove((job, cell))
                result = read_cell(cfg, cell)
                log.cell_finished(result is not None)
                bar.update(1)
                if result is None:
                    failed.append(cell)
                    tqdm.write(f"cell {cell.label} failed: see {cell.path.with_suffix('.log')} (submitit's log: "
                               f"{job.paths.stderr})", file=sys.stderr)  # fmt: skip
                else:
                    bar.set_postfix_str(f"{cell.label} ok {result['wall_time_s']:.0f}s")
    except (KeyboardInterrupt, Terminated) as stop:
        for job, _ in pending:
            job.cancel(check=False)
        deadline = time.monotonic() + _GRACE_S + 2
        while any(not job.done() for job, _ in pending) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        bar.close()
        log.interrupted(stopped=len(pending))
        e = log.entry
        print(f"promptdiff: benchmark {cfg.name} interrupted ({e['cells_done']} cells finished, "
              f"{e['cells_failed']} failed, {e['cells_stopped']} stopped); rerun the same command to resume",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)) from None
    except BaseException:
        for job, _ in pending:
            job.cancel(check=False)
        raise
    finally:
        _on_sigterm(previous_term)
    bar.close()
    log.close()
    return failed


class RunLog:
    """This invocation's entry in runs.json (a list, one entry per invocation that ran or submitted cells),
    rewritten atomically at the start, after every finished cell and at the end (or the interruption).
    `extra`: more keys of the entry (a submitit launch's job id and folder)."""

    def __init__(self, path: Path, todo: int, workers: int, threads: int, launcher: str = "local", **extra):
        self.path = path
        self.start = time.perf_counter()
        runs = load_runs(path)
        self.entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "elapsed_s": 0.0,
                      "launcher": launcher, **extra,
                      "cells_todo": todo, "cells_done": 0, "cells_failed": 0, "finished": False,
                      "workers": workers, "threads_per_cell": threads, "cpu_count": os.cpu_count(),
                      "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip
        self.runs = [*runs, self.entry]
        self._write()

    def cell_finished(self, ok: bool) -> None:
        self.entry["cells_done" if ok else "cells_failed"] += 1
        self._write()

    def close(self) -> None:
        self.entry["finished"] = True
        self._write()

    def interrupted(self, stopped: int) -> None:
        """Ctrl-C: `stopped` cells were running; the cells neither finished nor stopped never started."""
        e = self.entry
        e.update(interrupted=True, cells_stopped=stopped,
                 cells_not_started=e["cells_todo"] - e["cells_done"] - e["cells_failed"] - stopped)  # fmt: skip
        self._write()

    def _write(self) -> None:
        self.entry["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, json.dumps(self.runs, indent=1) + "\n")


def load_runs(path: Path) -> list[dict]:
    """The invocations recorded in runs.json ([] when there is none)."""
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())
    if not isinstance(runs, list):
        raise ValueError(f"{path}: expected a list of benchmark invocations")
    return runs


def _check(cfg: BenchmarkConfig) -> None:
    from promptdiff.envs import get_family

    if not cfg.methods or not cfg.families or not cfg.seeds:
        raise ValueError(f"benchmark {cfg.name!r} needs methods, families and seeds")
    names = [m.name for m in cfg.methods]
    if len(set(names)) != len(names):
        raise ValueError(f"benchmark {cfg.name!r}: method names repeat: {names}")
    for f in cfg.families:
        get_family(f)  # unknown family: a clear error before anything runs
    for m in cfg.methods:
        for f in cfg.families:
            path = Path(m.config.format(family=f, seed=cfg.seeds[0]))
            if not path.is_file():
                raise FileNotFoundError(f"method {m.name}: config {path} not found")
    if cfg.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {cfg.episodes}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1, got {cfg.threads}")
    if cfg.focus is not None and cfg.focus not in [m.name for m in cfg.methods]:
        raise ValueError(f"focus {cfg.focus!r} is not one of the methods {[m.name for m in cfg.methods]}")
    if cfg.launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {cfg.launcher!r}")
    slurm_options(cfg)


# -- tables ------------------------------------------------------------------------------------------
def collect(cfg: BenchmarkConfig, every: list[Cell]) -> list[dict]:
    """One row per (method, family): per-seed primary-set results of the cells that are done, their mean and std."""
    from promptdiff.rollout.evaluator import migrate_result  # cells written before the keys were unified
    results = {c.label: read_cell(cfg, c) for c in every}
    rows = []
    for m in cfg.methods:
        for f in cfg.families:
            runs = [migrate_result(results[c.label]) for c in every
                    if c.method is m and c.family == f and results[c.label] is not None]  # fmt: skip
            ret = [r["sets"][r["primary"]]["return_mean"] for r in runs]
            score = [r["sets"][r["primary"]].get("score_mean") for r in runs]
            score = [s for s in score if s is not None]
            rows.append({"method": m.name, "family": f, "seeds": len(runs), "seeds_expected": len(cfg.seeds),
                         "return_mean": _mean(ret), "return_std": _std(ret), "score_mean": _mean(score),
                         "score_std": _std(score),
                         "tuned_parameters": runs[0].get("tuned_parameters") if runs else None,
                         "wall_time_s": float(sum(r["wall_time_s"] for r in runs)) if runs else None,
                         "commands": [r["command"] for r in runs]})  # fmt: skip
    return rows


def _mean(x):
    return float(np.mean(x)) if x else None


def _std(x):
    return float(np.std(x)) if x else None


def relative(ret: float | None, ref: float | None) -> float | None:
    """How a return compares with the reference's, > 1 better: ret / ref for positive returns,
    ref / ret when both are negative (costs, e.g. cheetah_vel); None when signs differ or data is missing."""
    if ret is None or ref is None or ret == 0 or ref == 0 or (ret > 0) != (ref > 0):
        return None
    return ret / ref if ref > 0 else ref / ret


def write_tables(cfg: BenchmarkConfig, every: list[Cell]) -> dict[str, str]:
    out = Path(cfg.out_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(cfg, every)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "png": out / "table.png"}
    aggregate = aggregate_statistics(cfg, every)
    _atomic_write(paths["md"], markdown(cfg, rows, load_runs(out / "runs.json"), aggregate))
    if aggregate["methods"]:
        paths["profile"] = out / "profile.png"
        profile_chart(cfg, aggregate, paths["profile"])
        paths["stats"] = out / "stats.json"
        _atomic_write(paths["stats"], json.dumps(_plain_stats(aggregate), indent=1) + "\n")
    with open(paths["csv"].with_suffix(".csv.tmp"), "w", newline="") as fh:
        keys = [k for k in rows[0] if k != "commands"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in keys})
    paths["csv"].with_suffix(".csv.tmp").replace(paths["csv"])
    bar_chart(cfg, rows, paths["png"])
    return {k: str(v) for k, v in paths.items()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _cell(r: dict, key: str = "return") -> str:
    if r["seeds"] == 0:
        return "missing"
    text = f"{r[f'{key}_mean']:.1f} ± {r[f'{key}_std']:.1f}" if key == "return" else \
        f"{r[f'{key}_mean']:.3f} ± {r[f'{key}_std']:.3f}"  # fmt: skip
    return text if r["seeds"] == r["seeds_expected"] else f"{text} ({r['seeds']}/{r['seeds_expected']} seeds)"


def _average_rows(by: dict, names: list[str], families: list[str], key: str, fmt: str) -> list[str]:
    """The average row over all families (a method's entry only when all its cells have every seed),
    and, when some family is incomplete, a second row over the families complete for every method, so
    that methods can still be compared on equal terms."""

    def row(label: str, fams: list[str]) -> str:
        vals = [[by[(m, f)][key] for f in fams] for m in names]
        done = [all(by[(m, f)]["seeds"] == by[(m, f)]["seeds_expected"] for f in fams) for m in names]
        return f"| {label} | " + " | ".join(fmt.format(np.mean(v)) if ok and None not in v else "—"
                                           for v, ok in zip(vals, done)) + " |"  # fmt: skip

    lines = [row("average", families)]
    common = [f for f in families if all(by[(m, f)]["seeds"] == by[(m, f)]["seeds_expected"]
                                         and by[(m, f)][key] is not None for m in names)]  # fmt: skip
    if common and common != families:
        lines.append(row(f"average over {', '.join(common)} (complete for every method)", common))
    return lines


def _minutes(seconds: list[float | None]) -> str:
    """Wall time of some cells in minutes: — when none is done, never 0.0 for cells that ran."""
    done = [s for s in seconds if s is not None]
    if not done:
        return "—"
    minutes = sum(done) / 60
    return f"{minutes:.1f}" if minutes >= 0.1 else "< 0.1"


def runs_summary(runs: list[dict]) -> list[str]:
    """table.md's lines on the invocations that ran the cells (see runs.json); SLURM submissions, which only
    submitted cells, are listed apart."""
    submitted = [r for r in runs if r.get("launcher") == "slurm"]
    runs = [r for r in runs if r.get("launcher") != "slurm"]
    lines = []
    if runs:
        total = sum(r["elapsed_s"] for r in runs) / 60
        done = sum(r["cells_done"] for r in runs)
        each = "; ".join(f"{r['started']}: {r['elapsed_s'] / 60:.1f} min, {r['cells_done']} cells"
                         f"{_stopped(r)}"
                         f", {r['workers']} worker(s) x {r['threads_per_cell']} thread(s), {r['machine']}"
                         f"{'' if r.get('launcher', 'local') == 'local' else ', ' + r['launcher']}"
                         for r in runs)  # fmt: skip
        lines += [f"Elapsed wall-clock time of the benchmark invocations that ran cells (runs.json): {total:.1f} min "
                  f"for {done} cells, in {len(runs)} invocation(s): {each}.", ""]
    if submitted:
        each = "; ".join(f"{r['started']}: job {r['job_id']}, {r['cells_todo']} cells x {r['threads_per_cell']} "
                         f"thread(s)" for r in submitted)  # fmt: skip
        lines += [f"SLURM job arrays submitted (runs.json; each cell's JSON holds its own wall time): {each}.", ""]
    return lines


def _stopped(run: dict) -> str:
    if run["finished"]:
        return ""
    if run.get("interrupted"):
        return f" (interrupted by Ctrl-C: {run['cells_stopped']} cells stopped, {run['cells_not_started']} not started)"
    return " (stopped before the end; time up to its last finished cell)"


def _where(cfg: BenchmarkConfig) -> str:
    """Which tasks the cells roll out on: the test tasks, or validation tasks (`split=val` presets)."""
    val = ["--data.init_args.split=val" in m.args for m in cfg.methods]  # the split is linked into the model
    return "validation-task (held-out training tasks)" if all(val) else "mixed (see each method)" if any(val) else "test"


def markdown(cfg: BenchmarkConfig, rows: list[dict], runs: list[dict] | None = None,
             aggregate: dict | None = None) -> str:
    by = {(r["method"], r["family"]): r for r in rows}
    names = [m.name for m in cfg.methods]
    complete = all(r["seeds"] == r["seeds_expected"] for r in rows)
    lines = [f"# {cfg.name}", "",
             f"Mean {_where(cfg)} return over seeds {cfg.seeds} (± std over seeds), {cfg.episodes} episodes per task, "
             f"prompt length 5 unless the method name says otherwise.{'' if complete else ' INCOMPLETE: some cells are missing.'}", "",
             "| family | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]  # fmt: skip
    for f in cfg.families:
        lines.append(f"| {f} | " + " | ".join(_cell(by[(m, f)]) for m in names) + " |")
    lines += _average_rows(by, names, cfg.families, "return_mean", "{:.1f}")
    lines += ["", "Normalised score ((return - random) / (expert - random), dataset cards), mean ± std over seeds:", "",
              "| family | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]  # fmt: skip
    for f in cfg.families:
        lines.append(f"| {f} | " + " | ".join(_cell(by[(m, f)], "score") if by[(m, f)]["score_mean"] is not None
                                              else "—" for m in names) + " |")  # fmt: skip
    lines += _average_rows(by, names, cfg.families, "score_mean", "{:.3f}")
    if cfg.reference in names:
        lines += ["", f"Return relative to {cfg.reference} on the same family (> 1: better; for negative returns "
                      f"the inverse ratio):", "", "| family | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for f in cfg.families:
            ref = by[(cfg.reference, f)]["return_mean"]
            vals = [relative(by[(m, f)]["return_mean"], ref) for m in names]
            lines.append(f"| {f} | " + " | ".join("—" if v is None else f"{v:.3f}" for v in vals) + " |")
    params = [by[(m, cfg.families[0])]["tuned_parameters"] for m in names]
    walls = [[by[(m, f)]["wall_time_s"] for f in cfg.families] for m in names]
    example = next((c for r in rows for c in r["commands"]), None)
    lines += ["", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
              f"| tuned parameters ({cfg.families[0]}, all test tasks) | " +
              " | ".join("—" if p is None else f"{p:,}" for p in params) + " |",
              "| wall time, all cells (min) | " + " | ".join(_minutes(w) for w in walls) + " |", "",
              f"Total wall time of the cells: {_minutes([w for ws in walls for w in ws])} min. Every cell's exact "
              f"command is in its JSON under cells/" + (f", e.g. `{example}`" if example else "."), ""]  # fmt: skip
    lines += statistics_lines(aggregate) if aggregate else []
    lines += runs_summary(runs or [])
    return "\n".join(lines)


# -- aggregate statistics (promptdiff.stats) -----------------------------------------------------------
PROFILE_TAUS = np.linspace(0.0, 1.5, 61)
"""The normalised-score thresholds of the performance profile."""


def focus_method(cfg: BenchmarkConfig) -> str:
    names = [m.name for m in cfg.methods]
    return cfg.focus or ("prompt_diffuser" if "prompt_diffuser" in names else names[0])


def task_scores(cfg: BenchmarkConfig, every: list[Cell]) -> tuple[dict[str, dict[tuple[str, int], list[float]]], int, int]:
    """method -> (family, task) -> the normalised score of each done seed on that task (the mean over its episodes),
    from the cells' primary sets; also how many done cells there are and how many of them lack per-episode
    returns (cells written before those were kept)."""
    from promptdiff.rollout.evaluator import migrate_result

    scores: dict[str, dict[tuple[str, int], list[float]]] = {m.name: {} for m in cfg.methods}
    done = lacking = 0
    for cell in every:
        summary = read_cell(cfg, cell)
        if summary is None:
            continue
        summary = migrate_result(summary)
        done += 1
        tasks = summary["sets"][summary["primary"]].get("tasks") or {}  # a summary with means only: no runs
        lacking += not tasks or any("returns" not in t for t in tasks.values())
        for task, result in tasks.items():
            if result.get("normalised_score") is not None:
                scores[cell.method.name].setdefault((cell.family, int(task)), []).append(float(result["normalised_score"]))
    return scores, done, lacking


def aggregate_statistics(cfg: BenchmarkConfig, every: list[Cell], seed: int = 0) -> dict:
    """Per method: IQM of the normalised score over its (family, task, seed) runs; against the focus method: the
    probability of improvement and the IQM difference on the tasks both have, all with 95% stratified bootstrap
    CIs (`promptdiff.stats`); and each method's performance profile."""
    from promptdiff import stats

    scores, done, lacking = task_scores(cfg, every)
    focus = focus_method(cfg)
    out = {"focus": focus, "methods": {}, "cells": done, "cells_without_episodes": lacking,
           "taus": PROFILE_TAUS.tolist()}  # fmt: skip
    for name, by_task in scores.items():
        if not by_task:
            continue
        keys = sorted(by_task)
        entry = {"runs": sum(len(by_task[k]) for k in keys), "tasks": len(keys),
                 "iqm": stats.iqm([by_task[k] for k in keys], seed=seed),
                 "profile": stats.performance_profile([by_task[k] for k in keys], PROFILE_TAUS, seed=seed)}  # fmt: skip
        common = [k for k in keys if k in scores[focus]]
        if name != focus and common:
            mine, theirs = [scores[focus][k] for k in common], [by_task[k] for k in common]
            entry.update(common_tasks=len(common),
                         poi=stats.probability_of_improvement(mine, theirs, seed=seed),
                         difference=stats.iqm_difference(mine, theirs, seed=seed))  # fmt: skip
        out["methods"][name] = entry
    return out


def statistics_lines(aggregate: dict) -> list[str]:
    """table.md's section on the aggregate statistics."""
    focus, methods = aggregate["focus"], aggregate["methods"]
    if not methods:
        return []
    lines = ["", "Aggregate statistics of the normalised score (Agarwal et al. 2021): interquartile mean (IQM) over "
             "every (family, task, seed) run, with a 95% stratified bootstrap CI (runs resampled within each task); "
             f"the probability that a run of {focus} beats one of the other method on the same task (ties half, "
             f"averaged over the tasks both have) and the IQM difference {focus} - other on those tasks, each with "
             "its 95% CI. Separable: the CI of the difference excludes 0; otherwise the two are not separable at "
             "these seeds.", "",
             f"| method | runs (tasks) | IQM [95% CI] | P({focus} > method) [95% CI] | IQM {focus} - method [95% CI] "
             "| separable |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in methods.items():
        if "poi" in e:
            verdict = ("yes: " + (f"{focus} better" if e["difference"].value > 0 else f"{name} better")
                       if e["difference"].excludes(0.0) else "no")  # fmt: skip
            versus = [e["poi"].format(), e["difference"].format(), verdict]
        else:
            versus = ["—", "—", "—"]
        lines.append(f"| {name} | {e['runs']} ({e['tasks']}) | {e['iqm'].format()} | " + " | ".join(versus) + " |")
    if aggregate["cells_without_episodes"]:
        lines += ["", f"{aggregate['cells_without_episodes']} of {aggregate['cells']} cells hold task means only (written "
                      "before per-episode returns were kept); the statistics above resample seeds, not episodes."]  # fmt: skip
    lines += ["", "profile.png: the performance profile of every method (fraction of runs with normalised score "
                  "above tau, 95% CI band); stats.json: these numbers.", ""]  # fmt: skip
    return lines


def _plain_stats(aggregate: dict) -> dict:
    """aggregate_statistics as JSON-able values (Estimates as {value, low, high})."""

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if hasattr(v, "low") and hasattr(v, "high"):
            return {"value": v.value, "low": v.low, "high": v.high}
        return v

    return plain(aggregate)


def profile_chart(cfg: BenchmarkConfig, aggregate: dict, path: Path) -> None:
    """profile.png, drawn by `promptdiff.viz.tables.performance_profile_figure`."""
    from promptdiff.viz.tables import performance_profile_figure

    taus = np.asarray(aggregate["taus"])
    profiles = {name: (taus, *(np.array([getattr(p, k) for p in e["profile"]]) for k in ("value", "low", "high")))
                for name, e in aggregate["methods"].items()}  # fmt: skip
    fig = performance_profile_figure(profiles, title=f"{cfg.name}: performance profiles over seeds {cfg.seeds}")
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def bar_chart(cfg: BenchmarkConfig, rows: list[dict], path: Path) -> None:
    """table.png: the normalised score per family and method, drawn by `promptdiff.viz.tables.benchmark_figure`
    (the one drawing of a benchmark table; missing cells are marked, never drawn as 0)."""
    from promptdiff.viz.tables import benchmark_figure

    fig = benchmark_figure(rows, value="auto", title=f"{cfg.name}: mean over seeds {cfg.seeds}")
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
