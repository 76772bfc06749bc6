"""The console script's own commands: --version, the usage line, `promptdiff families`."""

import subprocess
import sys

import pytest

from promptdiff import __version__
from promptdiff.cli.families import families_report
from promptdiff.cli.main import main
from promptdiff.envs import all_families

from test_pretrain import ROOT, tiny_data


def _row(report: str, family: str) -> dict:
    lines = report.splitlines()
    header = lines[0]
    starts = [header.index(name) for name in header.split()]
    row = next(line for line in lines[2:] if line.split()[:1] == [family])
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None])]
    return dict(zip(header.split(), cells))


def test_version_and_a_usage_line_that_names_the_lightning_commands():
    run = lambda *args: subprocess.run([sys.executable, "-m", "promptdiff.cli.main", *args], capture_output=True,
                                       text=True, cwd=ROOT)  # noqa: E731 fmt: skip
    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"promptdiff {__version__}"
    usage = run("--help").stdout.splitlines()[0]
    for command in ("fit", "validate", "test", "collect", "benchmark", "families", "data"):
        assert command in usage, usage
    # the top-level help does not pay for importing lightning (seconds): only fit/validate/test do
    probe = "import sys; from promptdiff.cli.main import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
            "print('lightning' in sys.modules, file=sys.stderr)"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stderr.strip().splitlines()[-1] == "False"


def test_families_lists_every_family_and_what_is_missing(tmp_path, capsys):
    empty = families_report(tmp_path)
    for name, fam in all_families().items():
        row = _row(empty, name)
        assert row["tasks"] == str(fam.num_tasks) and row["obs"] == str(fam.obs_dim)
        assert row["train/val/test"] == f"{len(fam.train_tasks)}/{len(fam.val_tasks)}/{len(fam.test_tasks)}"
        assert row["present"] == "-" and "data" in row["missing"] and "plm" in row["missing"]
        assert f"  {name} data: promptdiff collect --family {fam.dataset_family}" in empty
    # data made for point_robot (tiny_data links the shipped PLM): both now count as present, nothing else changes
    tiny_data("point_robot", tmp_path)
    assert main(["families", "--root", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    row = _row(report, "point_robot")
    assert row["present"] == "data, plm" and row["missing"] == "stage-1 diffuser"
    assert "point_robot data:" not in report and "ant_dir data:" in report
    # the shipped tree: every built-in family (one pre-training config each) has its PLM
    shipped, builtin = families_report(ROOT / "datasets"), [p.stem for p in (ROOT / "conf" / "pretrain").glob("*.yaml")]
    assert len(builtin) >= 7 and all("plm" in _row(shipped, name)["present"].split(", ") for name in builtin)


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")
@pytest.mark.parametrize("option, name, expected", [("--model.help", "PromptDiffuser", "--model.guidance_scale"),
                                                    ("--data.help", "FewShotDataModule", "--data.prompt_quality")])
def test_a_method_or_data_module_help_by_class_name(option, name, expected, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", option, name])
    assert stop.value.code == 0 and expected in capsys.readouterr().out


def test_minari_commands_without_minari_say_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "minari", None)  # as if the optional extra were not installed
    assert main(["data", "export-minari", "--family", "point_robot"]) == 2
    assert main(["data", "import-minari", "promptdiff/point_robot-train-expert-v0", "--family", "point_robot"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all('pip install -e ".[minari]"' in line for line in errors)
