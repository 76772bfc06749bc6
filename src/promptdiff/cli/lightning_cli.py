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

import os
import signal
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from promptdiff.cli.main import LIGHTNING_COMMANDS  # noqa: F401 - one definition, read before lightning is imported
LINKED = ("family", "context_length", "prompt_length", "root", "split", "tasks", "seed")
# integer options of promptdiff's data modules and methods that must be >= 1 (checked before anything is built)
POSITIVE = ("batch_size", "batch_size_per_task", "context_length", "prompt_length", "sample_steps", "diffusion_steps",
            "val_batches", "best_of_n", "cond_dim", "width", "layers", "heads", "mlp_width", "episodes")  # fmt: skip
# files a config names that must exist before a run starts
FILES = ("plm", "init_diffuser")


class ConfigError(ValueError):
    """A setting that cannot work, found before any work starts (one line: the option, the value, the fix)."""


def check_config(cfg) -> None:
    """Refuse settings that would fail later (or train on the wrong thing), naming the option and value."""
    from promptdiff.envs.families import get_family

    for group in ("data", "model"):
        args = cfg.get(f"{group}.init_args")
        if args is None:
            continue
        for key, value in args.as_dict().items():
            option = f"--{group}.init_args.{key}"
            if key == "family" and isinstance(value, str):
                try:
                    get_family(value)
                except KeyError as err:
                    raise ConfigError(f"{option}: {err.args[0]}") from None
            elif key in POSITIVE and isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ConfigError(f"{option} {value}: must be at least 1")
            elif key in ("tasks", "train_tasks") and value is not None and len(value) == 0:
                raise ConfigError(f"{option} []: an empty task list (leave it unset for the family's own tasks)")
            elif key in FILES and value is not None and not Path(value).is_file():
                raise ConfigError(f"{option} {value}: no such file")


def check_ckpt_path(cfg) -> None:
    """`--ckpt_path` names an existing checkpoint that runs no code (checked before Lightning reads it)."""
    ckpt = cfg.get("ckpt_path")
    if ckpt:
        if not Path(ckpt).is_file():
            raise ConfigError(f"--ckpt_path {ckpt}: no such file")
        from promptdiff.safe_io import load_checkpoint

        load_checkpoint(ckpt, what="checkpoint given by --ckpt_path")


class PromptDiffCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # a link whose source or target the chosen classes lack is skipped (e.g. no split in pre-training)
        for key in LINKED:
            parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}", apply_on="parse")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyper-parameters right after parsing: vet the file first
        if self.config.get("subcommand"):
            check_ckpt_path(self.config[self.config.subcommand])
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        check_config(cfg)
        fill_family_placeholder(cfg)

    def instantiate_classes(self) -> None:
        """Build the classes; an error raised by a constructor (a PLM of the wrong family, a missing file) is
        reported as that one error, not as jsonargparse's list of every union member that did not match."""
        try:
            super().instantiate_classes()
        except Exception as err:  # noqa: BLE001 - re-raised as the innermost (the constructor's own) error
            raise ConfigError(_innermost_message(err)) from err

    def _ensure_data(self) -> None:
        dm = self.datamodule
        if dm is None or not hasattr(dm, "required_files"):
            return
        from promptdiff.production.collect import ensure_files

        ensure_files(dm.family, dm.required_files(), dm.hparams.root)

    def before_fit(self) -> None:
        if hasattr(self.model, "check_processes"):  # before DDP starts its processes, not in each of them
            self.model.check_processes(self.trainer.world_size)
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


def _innermost_message(err: BaseException) -> str:
    """The message of the exception at the bottom of `err`'s cause chain (the constructor's own error)."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def run_lightning(argv: list[str] | None) -> int:
    """Run LightningCLI on `argv` (None: the process's own command line). Errors in the configuration, the data
    or a checkpoint are printed as one line (exit 2); set PROMPTDIFF_TRACEBACK=1 for the traceback."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import promptdiff.data.datamodule  # noqa: F401 - imported, the data modules answer to their class names
    import promptdiff.data.fewshot  # noqa: F401   (`--data.help FewShotDataModule`), as the methods do
    from promptdiff.data.hdf5_format import DatasetError
    from promptdiff.methods.divergence import NonFiniteLossError
    from promptdiff.methods.frozen_plm import MethodSetupError
    from promptdiff.safe_io import UnreadableFileError

    try:
        PromptDiffCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            # allow_abbrev=False: `--trainer.max_step` is a typo, not an abbreviation of --trainer.max_steps
            parser_kwargs={"parser_mode": "omegaconf", "allow_abbrev": False},
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": "runs"},
        )
    except SIGTERMException:
        from promptdiff.callbacks.checkpoint import ModelCheckpoint

        saved = ModelCheckpoint.saved_on_sigterm
        where = f"{saved} holds the last finished step; resume with --ckpt_path {saved}" if saved else "no checkpoint written"
        print(f"promptdiff: stopped by SIGTERM: {where}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ConfigError, DatasetError, UnreadableFileError, FileNotFoundError, NonFiniteLossError,
            MethodSetupError) as err:
        if os.environ.get("PROMPTDIFF_TRACEBACK"):
            raise
        print(f"promptdiff: error: {_innermost_message(err) if isinstance(err, ConfigError) else err}", file=sys.stderr)
        return 2
    return 0
