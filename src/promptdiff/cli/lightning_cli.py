"""`promptdiff fit | validate | test`: LightningCLI (omegaconf mode) over promptdiff's modules.

Configs name the LightningModule and LightningDataModule by class path (`model.class_path`,
`data.class_path`); the data module's family and sequence lengths are linked into the model,
so each is written once.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class PromptDiffCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for key in ("family", "context_length", "prompt_length"):
            parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}", apply_on="parse")


def run_lightning(argv: list[str] | None) -> int:
    """Run LightningCLI on `argv` (None: the process's own command line)."""
    PromptDiffCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
    )
    return 0
