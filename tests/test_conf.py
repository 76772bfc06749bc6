"""The composed configs under conf/: each entry config names shared trainer / method / data files by paths
relative to itself, resolves to its family and class, and `{family}` in a shared trainer's logger name
becomes the run's family (PromptDiffCLI.before_instantiate_classes)."""

import pytest
from jsonargparse import Namespace

from conftest import ROOT, resolved_config
from promptdiff.cli.lightning_cli import PromptDiffCLI, fill_family_placeholder

FAMILIES = sorted(p.stem for p in (ROOT / "conf" / "pretrain").glob("*.yaml"))
BASELINES = sorted(p.stem for p in (ROOT / "conf" / "baselines").glob("*.yaml"))

# `PromptDiffCLI(args=[...])` inside pytest: LightningCLI notes that pytest's own argv is ignored
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended")


def _logger(name):
    return Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                     init_args=Namespace(save_dir="runs", name=name))  # fmt: skip


def test_family_placeholder_is_filled_from_the_data_module():
    cfg = Namespace(data=Namespace(init_args=Namespace(family="cheetah_vel")), trainer=Namespace(logger=_logger("pretrain/{family}")))
    fill_family_placeholder(cfg)
    assert cfg.trainer.logger.init_args.name == "pretrain/cheetah_vel"

    cfg = Namespace(data=Namespace(init_args=Namespace(family="ant_dir")),
                    trainer=Namespace(logger=[_logger("a/{family}"), _logger("baselines/prompt_dt")]))  # fmt: skip
    fill_family_placeholder(cfg)
    assert [lg.init_args.name for lg in cfg.trainer.logger] == ["a/ant_dir", "baselines/prompt_dt"]

    for logger in (False, None):  # no logger (the benchmark's --trainer.logger=false): nothing to fill
        cfg = Namespace(data=Namespace(init_args=Namespace(family="ant_dir")), trainer=Namespace(logger=logger))
        fill_family_placeholder(cfg)
        assert cfg.trainer.logger is logger


def test_shared_trainer_logger_gets_the_family_and_the_saved_config_too(tmp_path):
    """Through the real CLI: the logger that is built, and the config that is saved beside the logs."""
    cli = PromptDiffCLI(subclass_mode_model=True, subclass_mode_data=True, run=False,
                        parser_kwargs={"parser_mode": "omegaconf"}, trainer_defaults={"default_root_dir": "runs"},
                        args=["--config", str(ROOT / "conf" / "point_robot.yaml"), "--trainer.accelerator", "cpu",
                              "--trainer.logger.init_args.save_dir", str(tmp_path)])  # fmt: skip
    assert cli.trainer.logger.name == "prompt_diffuser/point_robot"
    assert cli.config.trainer.logger.init_args.name == "prompt_diffuser/point_robot"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_entry_configs_compose(family, tmp_path, monkeypatch):
    """conf/<family>.yaml, conf/pretrain/<family>.yaml and conf/diffuser_pretrain/<family>.yaml resolve from any
    working directory (their includes are relative to the file) to that family and the expected modules."""
    monkeypatch.chdir(tmp_path)
    expect = {"": ("PromptDiffuser", "FewShotDataModule", "prompt_diffuser/{family}", "test"),
              "pretrain": ("PromptDTPretrain", "PromptDTDataModule", "pretrain/{family}", None),
              "diffuser_pretrain": ("PromptDiffuser", "FewShotDataModule", "diffuser_pretrain/{family}", "train")}  # fmt: skip
    for folder, (model, data, logger, split) in expect.items():
        cfg = resolved_config(ROOT / "conf" / folder / f"{family}.yaml")
        assert cfg["data"]["init_args"]["family"] == family, folder
        assert cfg["model"]["class_path"].rsplit(".", 1)[1] == model and cfg["data"]["class_path"].endswith(data)
        assert cfg["data"]["init_args"].get("split") == split
        assert cfg["trainer"]["logger"]["init_args"]["name"] == logger
        assert "family" not in cfg["model"]["init_args"]  # written once, in the data module (linked)
    callbacks = [c["class_path"].rsplit(".", 1)[1] for c in resolved_config(ROOT / "conf" / f"{family}.yaml")["trainer"]["callbacks"]]
    assert ("RolloutVideoCallback" in callbacks) == (family != "point_robot")


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_configs_compose(method):
    cfg = resolved_config(ROOT / "conf" / "baselines" / f"{method}.yaml", "--data.init_args.family", "cheetah_vel")
    assert cfg["data"]["init_args"]["family"] == "cheetah_vel" and cfg["data"]["init_args"]["batch_size"] == 16
    assert cfg["trainer"]["logger"]["init_args"]["name"] == f"baselines/{method}"
    assert cfg["model"]["class_path"].startswith("promptdiff.methods.")


def test_the_denoiser_switch_documented_in_the_method_config_parses():
    text = (ROOT / "conf" / "method" / "prompt_diffuser.yaml").read_text()
    line = next(x for x in text.splitlines() if "--model.init_args.denoiser" in x)
    spec = line.split("--model.init_args.denoiser", 1)[1].strip().strip("'")
    cfg = resolved_config(ROOT / "conf" / "point_robot.yaml", "--model.init_args.denoiser", spec)
    assert cfg["model"]["init_args"]["denoiser"] == {"class_path": "promptdiff.models.TransformerDenoiser",
                                                     "init_args": {"width": 96}}  # fmt: skip
