"""`promptdiff fit | validate | test`: LightningCLI (omegaconf mode) over promptdiff's modules.

Configs name the LightningModule and LightningDataModule by class path (`model.class_path`,
`data.class_path`) and compose: a method config plus a family config (several `--config` files,
later ones override earlier ones). What the model and the data must agree on is written once, in
the data module, and linked into the model where the model has the argument: the family, the
sequence lengths K and L, the dataset root (from which the default PLM path is derived), the split
and its tasks, and the seed (Prompt Diffuser keys its diffusion draws by it, as the data module its
batches).

Before a run starts, the data files that this run's data module reads are made from the family's
expert if they are missing (and only those): the first-run convenience of `promptdiff fit --config
conf/ant_dir.yaml` on a fresh clone. Readers themselves never write.

Shared trainer configs (conf/trainer/*.yaml) cannot know the family: `{family}` in a logger's name
(`trainer.logger.init_args.name`) is replaced by the data module's family before the classes are built,
so the saved config.yaml and the logger hold the real name (`--print_config` still shows `{family}`).
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
LINKED = ("family", "context_length", "prompt_length", "root", "split", "tasks", "seed")


class PromptDiffCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # a link whose source or target the chosen classes lack is skipped (e.g. no split in pre-training)
        for key in LINKED:
            parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}", apply_on="parse")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        fill_family_placeholder(cfg)

    def _ensure_data(self) -> None:
        dm = self.datamodule
        if dm is None or not hasattr(dm, "required_files"):
            return
        from promptdiff.production.collect import ensure_files

        ensure_files(dm.family, dm.required_files(), dm.hparams.root)

    def before_fit(self) -> None:
        self._ensure_data()

    def before_validate(self) -> None:
        self._ensure_data()

    def before_test(self) -> None:
        self._ensure_data()


def fill_family_placeholder(cfg) -> None:
    """Replace `{family}` in the name of the trainer's logger(s) by `data.init_args.family`, in place."""
    family = cfg.get("data.init_args.family")
    logger = cfg.get("trainer.logger")
    if family is None or logger is None or isinstance(logger, bool):
        return
    for spec in logger if isinstance(logger, list) else [logger]:
        name = spec.get("init_args.name") if hasattr(spec, "get") else None
        if isinstance(name, str) and "{family}" in name:
            spec["init_args.name"] = name.replace("{family}", str(family))


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
