"""Files and settings a hostile or careless user hands promptdiff: checkpoints that would run code when
unpickled (refused by every loader before anything runs), diverged (non-finite) weights, and settings that
cannot work (refused in one line before any work starts). A PLM of another family with the same sizes:
tests/test_baselines.py."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from promptdiff.cli.main import main
from promptdiff.methods import PromptDiffuser, PromptDTPretrain
from promptdiff.methods.frozen_plm import load_frozen_plm
from promptdiff.production.expert_policy import load_expert_actor
from promptdiff.safe_io import UnreadableFileError, UnsafeFileError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PLM = ROOT / "datasets" / "point_robot" / "plm.ckpt"


class _RunsCode:
    """Unpickling this calls `touch <marker>`: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.fixture
def payload(tmp_path):
    """A checkpoint shaped like a real one (a real PLM's hyper-parameters and weights) with one entry whose
    unpickling runs a command; returns (file, marker that the command would create)."""
    marker = tmp_path / "code-ran"
    ck = torch.load(SHIPPED_PLM, map_location="cpu", weights_only=True)
    ck["state_dict"]["diffusers.0.evil"] = _RunsCode(marker)
    ck["hyper_parameters"]["note"] = _RunsCode(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(ck, path)
    return path, marker


def test_the_payload_really_runs_code_when_unpickled_unsafely(payload):
    path, marker = payload
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def _error_lines(err: str) -> list[str]:
    """The lines the command line printed as errors (pytest's own warnings aside)."""
    return [line for line in err.splitlines() if line.startswith("promptdiff: error")]


def _refused(call, marker: Path, match: str = "refusing to load") -> None:
    with pytest.raises((UnsafeFileError, ValueError), match=match):
        call()
    assert not marker.exists(), "the checkpoint ran code"


def test_safe_loader_refuses_code_and_names_the_global(payload):
    path, marker = payload
    with pytest.raises(UnsafeFileError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and ".call'" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_plm_loaders_refuse_code(payload):
    path, marker = payload
    _refused(lambda: PromptDTPretrain.load_policy(str(path)), marker)
    _refused(lambda: load_frozen_plm(path, "point_robot", 20, 5), marker)


def test_init_diffuser_refuses_code(payload):
    path, marker = payload
    _refused(lambda: PromptDiffuser("point_robot", plm=str(SHIPPED_PLM), init_diffuser=str(path)), marker)


def test_expert_policy_loader_refuses_code(payload, tmp_path):
    path, marker = payload
    _refused(lambda: load_expert_actor(path), marker)


@pytest.mark.parametrize("option", ["--model.init_args.plm", "--ckpt_path"])
def test_command_line_refuses_code_in_a_named_checkpoint(payload, option, capsys):
    path, marker = payload
    command = "test" if option == "--ckpt_path" else "fit"
    assert main([command, "--config", str(ROOT / "conf" / "point_robot.yaml"), option, str(path)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "refusing to load" in err[0] and str(path) in err[0], err
    assert not marker.exists()


def test_no_other_unpickling_in_the_package():
    """Only promptdiff.safe_io unpickles (torch.load / pickle.load / Lightning's load_from_checkpoint)."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|Unpickler\b|load_from_checkpoint\(")
    src = ROOT / "src" / "promptdiff"
    found = {str(p.relative_to(src)) for p in src.rglob("*.py") if pattern.search(p.read_text())}
    assert found == {"safe_io.py"}, found


def test_a_non_finite_plm_is_refused_naming_the_weight(tmp_path):
    ck = torch.load(SHIPPED_PLM, map_location="cpu", weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and k.startswith("model."))
    ck["state_dict"][name][0] = float("nan")
    torch.save(ck, tmp_path / "nan.ckpt")
    with pytest.raises(UnreadableFileError, match=f"weight '{name}' holds NaN"):
        PromptDTPretrain.load_policy(str(tmp_path / "nan.ckpt"))


@pytest.mark.parametrize("args, expected", [
    (["--data.init_args.family", "point_robto"], "--data.init_args.family: unknown task family 'point_robto'; "
                                                 "did you mean 'point_robot'?"),
    (["--model.init_args.sample_steps", "0"], "--model.init_args.sample_steps 0: must be at least 1"),
    (["--data.init_args.batch_size", "-4"], "--data.init_args.batch_size -4: must be at least 1"),
    (["--data.init_args.prompt_length", "-1"], "--data.init_args.prompt_length -1: must be at least 1"),
    (["--data.init_args.tasks", "[]"], "--data.init_args.tasks []: an empty task list"),
    (["--model.init_args.init_diffuser", "missing.ckpt"], "--model.init_args.init_diffuser missing.ckpt: no such file"),
])  # fmt: skip
def test_settings_that_cannot_work_are_refused_before_any_work(args, expected, tmp_path, capsys):
    code = main(["fit", "--config", str(ROOT / "conf" / "point_robot.yaml"), "--data.init_args.root", str(tmp_path),
                 "--trainer.default_root_dir", str(tmp_path / "runs"), *args])  # fmt: skip
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"promptdiff: error: {expected}"), err
    assert not any(tmp_path.iterdir()), "work started before the settings were checked"


def test_a_misspelt_option_is_not_taken_as_an_abbreviation(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(ROOT / "conf" / "point_robot.yaml"), "--data.init_args.root", str(tmp_path),
              "--trainer.max_step", "10"])  # fmt: skip
    assert info.value.code == 2 and "--trainer.max_step" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_traceback_on_request(tmp_path):
    env = dict(os.environ, PROMPTDIFF_TRACEBACK="1", OMP_NUM_THREADS="1")
    out = subprocess.run(["promptdiff", "fit", "--config", str(ROOT / "conf" / "point_robot.yaml"),
                          "--data.init_args.family", "point_robto"], capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert out.returncode != 0 and "Traceback" in out.stderr and "point_robto" in out.stderr


def test_a_non_finite_stage1_diffuser_is_refused_naming_the_weight(tmp_path):
    stage1 = PromptDiffuser("point_robot", plm=str(SHIPPED_PLM), split="train")
    state = {k: v.clone() for k, v in stage1.state_dict().items() if k.startswith("diffusers.0.")}
    name = next(k for k, v in state.items() if v.is_floating_point())
    torch.save({"state_dict": state}, tmp_path / "ok.ckpt")
    assert PromptDiffuser("point_robot", plm=str(SHIPPED_PLM), init_diffuser=str(tmp_path / "ok.ckpt"))
    state[name].view(-1)[0] = float("inf")
    torch.save({"state_dict": state}, tmp_path / "inf.ckpt")
    with pytest.raises(ValueError, match=f"weight '{name[len('diffusers.0.'):]}' holds NaN or inf"):
        PromptDiffuser("point_robot", plm=str(SHIPPED_PLM), init_diffuser=str(tmp_path / "inf.ckpt"))
