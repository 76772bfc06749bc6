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
                   [RolloutCallback(episodes, seed, prompt_seed = <seed>, final_json = <cell>.json, primary_only)]

so the seed changes the method's initialisation, its data stream, its prompt and the evaluation
episodes, and every method of one seed sees the same prompt-pool trajectory and the same episodes.
The cell's JSON (the rollout summary plus the command, wall time and tuned-parameter count) is
written only when the run succeeds: a rerun skips finished cells and retries the others.

Outputs, under `<out_dir>/<name>` (`<name>_quick` with --quick): `cells/<method>/<family>/seed<s>.json`
(+ `.log`, and `seed<s>/config.yaml`: the cell's fully resolved config), `table.md`, `table.csv` (one row per method and family: mean and std over seeds) and
`table.png` (normalised score per family and method). Methods whose cell failed or is missing
are shown as such, never averaged over fewer seeds silently.

`runs.json` records every invocation that ran cells: start, elapsed wall-clock time (updated after
each finished cell, so a run that is killed keeps its record up to its last finished cell), cells
finished and failed, workers, threads and the machine. A table run in several sittings (resumed)
is timed by the sum of its invocations' elapsed times; table.md reports it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


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
    """Cells run at once (each with OMP_NUM_THREADS threads if set, else cores / workers)."""
    quick_preset: dict | None = None
    """Overrides for --quick: families, seeds, episodes, and methods: {name: extra args}; methods not
    listed there are left out of the quick run."""


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
                           reference=cfg.reference, out_dir=cfg.out_dir, workers=cfg.workers)  # fmt: skip


@dataclass
class Cell:
    method: MethodSpec
    family: str
    seed: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.method.name}/{self.family}/seed{self.seed}"


def cells(cfg: BenchmarkConfig) -> list[Cell]:
    root = Path(cfg.out_dir) / cfg.name / "cells"
    return [Cell(m, f, s, root / m.name / f / f"seed{s}.json") for f in cfg.families for m in cfg.methods for s in cfg.seeds]


def command(cfg: BenchmarkConfig, cell: Cell) -> list[str]:
    """The `promptdiff fit` arguments of one cell."""
    fill = {"family": cell.family, "seed": cell.seed}
    callback = {"class_path": "promptdiff.callbacks.RolloutCallback",
                "init_args": {"every_n_val_epochs": 1_000_000, "episodes": cfg.episodes, "seed": cell.seed,
                              "prompt_seed": cell.seed, "final_table": True, "primary_only": True,
                              "final_json": str(cell.path)}}  # fmt: skip
    return ["fit", "--config", cell.method.config.format(**fill), f"--data.init_args.family={cell.family}",
            f"--seed_everything={cell.seed}", f"--data.init_args.seed={cell.seed}",
            *[a.format(**fill) for a in cell.method.args],
            "--trainer.logger=false", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={cell.path.with_suffix('')}",  # the cell's resolved config.yaml lands there
            f"--trainer.callbacks={json.dumps([callback])}"]  # fmt: skip


def run_cell(cfg: BenchmarkConfig, cell: Cell, threads: int) -> tuple[Cell, bool, float]:
    """Run one cell in its own process; on success add command and wall time to its JSON."""
    argv = command(cfg, cell)
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    log = cell.path.with_suffix(".log")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "promptdiff.cli.main", *argv], stdout=fh, stderr=subprocess.STDOUT,
                            env=env).returncode  # fmt: skip
    wall = time.perf_counter() - start
    if rc != 0 or not cell.path.is_file():
        cell.path.unlink(missing_ok=True)
        return cell, False, wall
    summary = json.loads(cell.path.read_text())
    summary.update(benchmark_method=cell.method.name, command=shlex.join(["promptdiff", *argv]), wall_time_s=wall,
                   threads=threads)  # fmt: skip
    tmp = cell.path.with_name(cell.path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(cell.path)
    return cell, True, wall


def run(cfg: BenchmarkConfig, quick: bool = False, workers: int | None = None, progress: bool = True,
        tables_only: bool = False) -> dict:
    """Run the missing cells, then write the tables; returns {"done", "failed", "skipped", "outputs"}.

    `tables_only`: run nothing, only (re)write the tables from the cells that exist (e.g. cells
    copied in from another machine); missing cells show as missing."""
    from tqdm import tqdm

    cfg = resolve(cfg, quick)
    _check(cfg)
    every = cells(cfg)
    todo = [] if tables_only else [c for c in every if not c.path.is_file()]
    workers = max(1, int(workers or cfg.workers))
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    failed = []
    log = RunLog(Path(cfg.out_dir) / cfg.name / "runs.json", todo=len(todo), workers=workers, threads=threads) \
        if todo else None  # fmt: skip
    bar = tqdm(total=len(todo), desc=f"{cfg.name}: cells", unit="cell", disable=not progress)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in as_completed([pool.submit(run_cell, cfg, c, threads) for c in todo]):
            cell, ok, wall = future.result()
            log.cell_finished(ok)
            bar.update(1)
            bar.set_postfix_str(f"{cell.label} {'ok' if ok else 'FAILED'} {wall:.0f}s")
            if not ok:
                failed.append(cell)
                tqdm.write(f"cell {cell.label} failed: see {cell.path.with_suffix('.log')}", file=sys.stderr)
    bar.close()
    if log is not None:
        log.close()
    outputs = write_tables(cfg, every)
    return {"done": len(todo) - len(failed), "failed": [c.label for c in failed],
            "skipped": sum(c.path.is_file() for c in every) if tables_only else len(every) - len(todo),
            "outputs": outputs}  # fmt: skip


class RunLog:
    """This invocation's entry in runs.json (a list, one entry per invocation that ran cells),
    rewritten atomically at the start, after every finished cell and at the end."""

    def __init__(self, path: Path, todo: int, workers: int, threads: int):
        self.path = path
        self.start = time.perf_counter()
        runs = load_runs(path)
        self.entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "elapsed_s": 0.0,
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


# -- tables ------------------------------------------------------------------------------------------
def collect(cfg: BenchmarkConfig, every: list[Cell]) -> list[dict]:
    """One row per (method, family): per-seed primary-set results, their mean and std."""
    from promptdiff.rollout.evaluator import migrate_result  # cells written before the keys were unified
    rows = []
    for m in cfg.methods:
        for f in cfg.families:
            runs = [migrate_result(json.loads(c.path.read_text()))
                    for c in every if c.method is m and c.family == f and c.path.is_file()]  # fmt: skip
            ret = [r["sets"][r["primary"]]["return_mean"] for r in runs]
            score = [r["sets"][r["primary"]].get("score_mean") for r in runs]
            score = [s for s in score if s is not None]
            rows.append({"method": m.name, "family": f, "seeds": len(runs), "seeds_expected": len(cfg.seeds),
                         "return_mean": _mean(ret), "return_std": _std(ret), "score_mean": _mean(score),
                         "score_std": _std(score),
                         "tuned_parameters": runs[0].get("tuned_parameters") if runs else None,
                         "wall_time_s": float(sum(r.get("wall_time_s", 0.0) for r in runs)),
                         "commands": [r.get("command", "") for r in runs]})  # fmt: skip
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
    _atomic_write(paths["md"], markdown(cfg, rows, load_runs(out / "runs.json")))
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


def runs_summary(runs: list[dict]) -> list[str]:
    """table.md's lines on the invocations that ran the cells (see runs.json)."""
    if not runs:
        return []
    total = sum(r["elapsed_s"] for r in runs) / 60
    done = sum(r["cells_done"] for r in runs)
    each = "; ".join(f"{r['started']}: {r['elapsed_s'] / 60:.1f} min, {r['cells_done']} cells"
                     f"{'' if r['finished'] else ' (stopped before the end; time up to its last finished cell)'}"
                     f", {r['workers']} worker(s) x {r['threads_per_cell']} thread(s), {r['machine']}"
                     for r in runs)  # fmt: skip
    return [f"Elapsed wall-clock time of the benchmark invocations that ran cells (runs.json): {total:.1f} min "
            f"for {done} cells, in {len(runs)} invocation(s): {each}.", ""]


def _where(cfg: BenchmarkConfig) -> str:
    """Which tasks the cells roll out on: the test tasks, or validation tasks (`split=val` presets)."""
    val = ["--data.init_args.split=val" in m.args for m in cfg.methods]  # the split is linked into the model
    return "validation-task (held-out training tasks)" if all(val) else "mixed (see each method)" if any(val) else "test"


def markdown(cfg: BenchmarkConfig, rows: list[dict], runs: list[dict] | None = None) -> str:
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
    walls = [sum(by[(m, f)]["wall_time_s"] for f in cfg.families) / 60 for m in names]
    lines += ["", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
              f"| tuned parameters ({cfg.families[0]}, all test tasks) | " +
              " | ".join("—" if p is None else f"{p:,}" for p in params) + " |",
              "| wall time, all cells (min) | " + " | ".join(f"{w:.1f}" for w in walls) + " |", "",
              f"Total wall time of the cells: {sum(walls):.1f} min. Every cell's exact command is in its JSON under "
              f"cells/, e.g. `{next((c for r in rows for c in r['commands']), '')}`", ""]  # fmt: skip
    lines += runs_summary(runs or [])
    return "\n".join(lines)


def bar_chart(cfg: BenchmarkConfig, rows: list[dict], path: Path) -> None:
    """table.png: the normalised score per family and method, drawn by `promptdiff.viz.tables.benchmark_figure`
    (the one drawing of a benchmark table; missing cells are marked, never drawn as 0)."""
    from promptdiff.viz.tables import benchmark_figure

    fig = benchmark_figure(rows, value="auto", title=f"{cfg.name}: mean over seeds {cfg.seeds}")
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
