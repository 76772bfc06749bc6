"""The notebooks run top to bottom in a Jupyter kernel, small (settings through PROMPTDIFF_NB_* environment
variables), on few-shot data made here, and write their figures; they are committed without outputs."""

import csv
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from promptdiff.production.collect import collect, default_collect_config
from promptdiff.envs import get_family

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["quickstart.ipynb", "prompt_space.ipynb"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ant_data(tmp_path_factory) -> Path:
    """2 training and 2 prompt-pool episodes of every test task of ant_dir and ant_dir_ood (one ant_dir file)."""
    root = tmp_path_factory.mktemp("nb_data")
    tasks = sorted(set(get_family("ant_dir").test_tasks) | set(get_family("ant_dir_ood").test_tasks))
    cfg = default_collect_config("ant_dir", root=str(root), tasks=tasks, episodes_per_task=2, prompt_episodes=2,
                                 card=False, workers=1)  # fmt: skip
    cfg.expert_policy = str(ROOT / "datasets" / "ant_dir" / "expert_policy.pt")  # the shipped actor
    collect(cfg)
    return root


def run_notebook(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
                   ).execute()  # fmt: skip  # raises CellExecutionError naming the failing cell
    return nb


def stdout_of(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("name") == "stdout")  # fmt: skip


def assert_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        assert path.is_file(), f"{path} was not written"
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 5_000, f"{path} is not a drawn PNG ({len(data)} bytes)"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: a cell was committed with outputs"


def test_quickstart_runs_and_draws_its_figures(ant_data, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    for key, value in {"STEPS": "3", "EPISODES": "1", "DATA": str(ant_data), "FIGURES": str(figures)}.items():
        monkeypatch.setenv(f"PROMPTDIFF_NB_{key}", value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = run_notebook("quickstart.ipynb")
    assert_pngs(figures, ["denoising_chain.png", "prompt_states.png", "returns.png"])
    out = stdout_of(nb)
    assert "expert prompt" in out and "generated" in out and "RMS gap" in out
    assert any(o.get("output_type") == "display_data" for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def write_table(path: Path) -> None:
    """A small benchmark table.csv as `promptdiff benchmark` writes it, with one missing cell."""
    path.parent.mkdir(parents=True)
    keys = ["method", "family", "seeds", "seeds_expected", "return_mean", "return_std", "score_mean", "score_std",
            "tuned_parameters", "wall_time_s"]  # fmt: skip
    rows = [["prompt_dt", "point_robot", 1, 1, -5.1, 0.0, 0.97, 0.0, 0, 3.0],
            ["prompt_diffuser", "point_robot", 1, 1, -5.4, 0.0, 0.93, 0.0, 41000, 30.0],
            ["soft_prompt", "point_robot", 0, 1, "", "", "", "", "", 0.0]]  # fmt: skip
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys)
        w.writerows(rows)


def test_prompt_space_runs_and_draws_the_map_and_the_table(ant_data, tmp_path, monkeypatch):
    figures, results = tmp_path / "figures", tmp_path / "results"
    write_table(results / "table1_quick" / "table.csv")
    settings = {"STEPS": "3", "TUNE_STEPS": "2", "SEEDS": "4", "TUNED_SEEDS": "1", "DATA": str(ant_data),
                "RESULTS": str(results), "FIGURES": str(figures)}  # fmt: skip
    for key, value in settings.items():
        monkeypatch.setenv(f"PROMPTDIFF_NB_{key}", value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = run_notebook("prompt_space.ipynb")
    assert_pngs(figures, ["prompt_space.png", "benchmark.png"])
    out = stdout_of(nb)
    # 3 test tasks x (4 expert + 4 generated + 1 Prompt-Tuning DT + 1 soft prompt) = 30 prompts: t-SNE
    assert "30 prompts" in out and "t-SNE" in out
    assert "soft_prompt" in out and "missing" in out
