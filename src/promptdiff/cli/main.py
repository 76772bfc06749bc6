"""`promptdiff`: one console script for every stage.

    promptdiff collect --family <family>                        expert data -> datasets/<family>/
    promptdiff expert train --config conf/expert/<family>.yaml  train a learned expert (PPO)
    promptdiff data import-prompt-dt SRC --family NAME          convert Prompt-DT's pickles
    promptdiff data info FILE_OR_MINARI_ID [--family F]         summarise a trajectory file or Minari dataset
    promptdiff data export-minari --family F [--role prompt]    our trajectory file -> a Minari dataset
    promptdiff data import-minari DATASET_ID --family F         a Minari dataset -> our trajectory file
    promptdiff data ship-stage1 CKPT --family F                 a stage-1 run's diffuser -> datasets/<family>/
    promptdiff families                                         task families and which files are present
    promptdiff fit --config conf/pretrain/<family>.yaml         pre-train the PLM (LightningCLI)
    promptdiff fit --config conf/<family>.yaml                  Prompt Diffuser on the test tasks
    promptdiff benchmark --config conf/benchmark/table1.yaml    methods x families x seeds -> results/

Subcommands parse with jsonargparse (LightningCLI's parser): every option can come from a YAML
given with --config and be overridden on the command line.

`promptdiff --plugin MODULE_OR_FILE.py <command> ...` (repeatable) first loads a plugin that
registers task families of one's own (see docs/extending.md); it is passed on to every worker and
benchmark cell through the PROMPTDIFF_PLUGINS environment variable.
"""

from __future__ import annotations

import json
import sys

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

from promptdiff import __version__

set_parsing_settings(docstring_parse_attribute_docstrings=True)

#: the subcommands LightningCLI runs (importing lightning takes seconds: only these pay for it)
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _config_parser(config_class, description: str) -> ArgumentParser:
    """A subcommand whose options are the fields of a config dataclass, or a YAML of them."""
    p = ArgumentParser(description=description)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file with the options below")
    p.add_class_arguments(config_class, as_group=False)
    return p


def _collect_parser() -> ArgumentParser:
    from promptdiff.production.collect import CollectConfig

    return _config_parser(CollectConfig, "Roll out the expert on every task of a family and write its "
                          "training set and few-shot prompt pool (HDF5) plus the dataset card.")  # fmt: skip


def _expert_train_parser() -> ArgumentParser:
    from promptdiff.production.expert_training import ExpertTrainingConfig

    return _config_parser(ExpertTrainingConfig, "Train a task-conditioned PPO expert "
                          "(stable-baselines3); resumes from the newest checkpoint in work_dir.")  # fmt: skip


def _import_parser() -> ArgumentParser:
    p = ArgumentParser(description="Convert Prompt-DT's <env>-<i>-expert.pkl and "
                       "<env>-<i>-prompt-expert.pkl files into promptdiff's HDF5 format.")  # fmt: skip
    p.add_argument("src", type=str, help="directory holding the pickles")
    p.add_argument("--family", type=str, required=True, help="task family, e.g. cheetah_vel")
    p.add_argument("--out_root", type=str, default="datasets", help="output root directory")
    p.add_argument("--env_prefix", type=str | None, default=None, help="file-name prefix <env>")
    p.add_argument("--tasks", type=list[int] | None, default=None, help="task indices (default: all found)")
    return p


def _benchmark_parser() -> ArgumentParser:
    from promptdiff.benchmark import BenchmarkConfig

    p = _config_parser(BenchmarkConfig, "Run every (method, family, seed) cell of a benchmark that has no result "
                       "yet, each as one `promptdiff fit`, and write table.md, table.csv and table.png.")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="run the config's small `quick` preset instead")
    p.add_argument("--tables_only", action="store_true",
                   help="run no cell; only rewrite table.md/.csv/.png from the cells that exist")
    return p


def _add_minari_root(p: ArgumentParser) -> None:
    p.add_argument("--minari_root", type=str | None, default=None,
                   help="Minari's dataset root (default: MINARI_DATASETS_PATH, else ~/.minari/datasets)")


def _info_parser() -> ArgumentParser:
    p = ArgumentParser(description="Validate a trajectory file (or a local Minari dataset, by its id) and print "
                       "its per-task statistics.")  # fmt: skip
    p.add_argument("file", type=str, help="an HDF5 trajectory file, or a Minari dataset id (namespace/name-vN)")
    p.add_argument("--family", type=str | None, default=None, help="the task family (needed for a Minari dataset)")
    _add_minari_root(p)
    return p


def _export_minari_parser() -> ArgumentParser:
    p = ArgumentParser(description="Write a family's trajectory file as a Minari dataset (through the minari "
                       "package: pip install -e '.[minari]'); minari.load_dataset(ID) then reads it.")  # fmt: skip
    p.add_argument("--family", type=str, required=True, help="task family, e.g. ant_dir")
    p.add_argument("--role", type=str, default="train", choices=["train", "prompt"], help="which file")
    p.add_argument("--quality", type=str, default="expert", help="data quality (file name suffix)")
    p.add_argument("--root", type=str, default="datasets", help="our dataset root")
    p.add_argument("--dataset_id", type=str | None, default=None,
                   help="Minari dataset id (default: promptdiff/<family>-<role>-<quality>-v0)")
    _add_minari_root(p)
    return p


def _import_minari_parser() -> ArgumentParser:
    p = ArgumentParser(description="Convert a local Minari dataset into promptdiff's trajectory file. Every "
                       "episode needs a task id: an episode-metadata field (--task_field) or a JSON file mapping "
                       "episode index to task id (--task_map).")  # fmt: skip
    p.add_argument("dataset_id", type=str, help="Minari dataset id")
    p.add_argument("--family", type=str, required=True, help="task family whose sizes and tasks the data has")
    p.add_argument("--role", type=str | None, default=None, help="train or prompt (default: as exported, else train)")
    p.add_argument("--quality", type=str | None, default=None, help="default: as exported, else expert")
    p.add_argument("--root", type=str, default="datasets", help="our dataset root (the file goes to its place)")
    p.add_argument("--out", type=str | None, default=None, help="write this file instead")
    p.add_argument("--task_field", type=str, default="task_id", help="episode-metadata field holding the task id")
    p.add_argument("--task_map", type=str | None, default=None, help="JSON file {episode index: task id}")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    _add_minari_root(p)
    return p


def _ship_stage1_parser() -> ArgumentParser:
    p = ArgumentParser(description="Ship a stage-1 diffuser: keep the diffuser weights and hyper-parameters of a "
                       "checkpoint of `promptdiff fit --config conf/diffuser_pretrain/<family>.yaml` as "
                       "<root>/<family>/diffuser_stage1.ckpt, with a JSON record (step, the losses the run logged).")  # fmt: skip
    p.add_argument("ckpt", type=str, help="a checkpoint of the stage-1 run (e.g. its last.ckpt)")
    p.add_argument("--family", type=str, required=True, help="the run's family")
    p.add_argument("--root", type=str, default="datasets", help="dataset root")
    p.add_argument("--run_dir", type=str | None, default=None,
                   help="the run's log directory (runs/diffuser_pretrain/<family>/version_N): its losses go in the record")
    p.add_argument("--note", type=str | None, default=None, help="free text for the record (command, machine, why this step)")
    return p


def _families_parser() -> ArgumentParser:
    p = ArgumentParser(description="List the task families (tasks, splits, sizes) and which of their files "
                       "(data, expert, PLM, stage-1 diffuser) are present, with the commands that make the rest.")  # fmt: skip
    p.add_argument("--root", type=str, default="datasets", help="dataset root")
    return p


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="promptdiff", description="promptdiff: prompt tuning of pre-trained decision transformers. "
                            "Run `promptdiff <command> --help` for each command's options; "
                            "`promptdiff fit|validate|test --config ...` run Lightning (see `promptdiff fit --help`); "
                            "`promptdiff --plugin MODULE <command> ...` loads a plugin with families of one's own first.",
                            version=__version__)  # fmt: skip
    sub = parser.add_subcommands(dest="command")
    sub.add_subcommand("collect", _collect_parser(), help="collect expert data for a task family")
    sub.add_subcommand("benchmark", _benchmark_parser(), help="run a benchmark table (methods x families x seeds)")
    sub.add_subcommand("families", _families_parser(), help="list task families and their files")
    for name, what in (("fit", "train (pre-training, a prompt-tuning method)"), ("validate", "validate a checkpoint"),
                       ("test", "roll a checkpoint out on the test tasks")):  # fmt: skip
        # listed for the usage line only: main() hands these to LightningCLI before this parser is built
        sub.add_subcommand(name, ArgumentParser(description=f"LightningCLI: see `promptdiff {name} --help`"),
                           help=f"{what}: LightningCLI, `promptdiff {name} --help`")  # fmt: skip
    expert = ArgumentParser(description="Learned experts.")
    sub.add_subcommand("expert", expert, help="train the learned experts")
    expert_sub = expert.add_subcommands(dest="action")
    expert_sub.add_subcommand("train", _expert_train_parser(), help="train a PPO expert")
    data = ArgumentParser(description="Dataset tools.")
    sub.add_subcommand("data", data, help="import and inspect datasets")
    data_sub = data.add_subcommands(dest="action")
    data_sub.add_subcommand("import-prompt-dt", _import_parser(), help="import Prompt-DT pickles")
    data_sub.add_subcommand("info", _info_parser(), help="summarise a trajectory file or Minari dataset")
    data_sub.add_subcommand("export-minari", _export_minari_parser(), help="write a trajectory file as a Minari dataset")
    data_sub.add_subcommand("import-minari", _import_minari_parser(), help="convert a Minari dataset")
    data_sub.add_subcommand("ship-stage1", _ship_stage1_parser(), help="ship a stage-1 diffuser checkpoint")
    return parser


def _strip(ns) -> dict:
    d = ns.as_dict()
    d.pop("config", None)
    d.pop("__path__", None)
    return d


def _take_plugins(argv: list[str]) -> list[str]:
    """Load the leading `--plugin X` / `--plugin=X` options; return the remaining arguments."""
    from promptdiff.envs import add_plugin

    while argv and (argv[0] == "--plugin" or argv[0].startswith("--plugin=")):
        if argv[0] == "--plugin":
            if len(argv) < 2:
                raise SystemExit("promptdiff: error: --plugin needs a module name or a .py file")
            name, argv = argv[1], argv[2:]
        else:
            name, argv = argv[0].split("=", 1)[1], argv[1:]
        try:
            add_plugin(name)
        except ImportError as err:
            raise SystemExit(f"promptdiff: error: {err}") from None
    return argv


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    plugged = argv[:1] and (argv[0] == "--plugin" or argv[0].startswith("--plugin="))
    argv = _take_plugins(argv)
    from promptdiff.envs.families import load_plugins

    try:  # plugins named in PROMPTDIFF_PLUGINS (e.g. inherited by a benchmark cell) before any class path is read
        load_plugins()
    except ImportError as err:
        raise SystemExit(f"promptdiff: error: {err}") from None
    if plugged:
        from_command_line = False  # LightningCLI must not read sys.argv, which still holds --plugin
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from promptdiff.cli.lightning_cli import run_lightning

        return run_lightning(None if from_command_line else argv)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    from promptdiff.data.hdf5_format import DatasetError

    try:
        if cfg.command == "collect":
            from promptdiff.production.collect import CollectConfig, collect

            for path in collect(CollectConfig(**_strip(cfg.collect))):
                print(path)
        elif cfg.command == "benchmark":
            from promptdiff.benchmark import BenchmarkConfig, MethodSpec, run

            args = _strip(cfg.benchmark)
            quick, tables_only = args.pop("quick"), args.pop("tables_only")
            args["methods"] = [MethodSpec(**m) for m in args["methods"]]
            result = run(BenchmarkConfig(**args), quick=quick, tables_only=tables_only)
            for path in result["outputs"].values():
                print(path)
            if result["failed"]:
                print(f"promptdiff: {len(result['failed'])} cells failed: {', '.join(result['failed'])}", file=sys.stderr)
                return 1
        elif cfg.command == "expert":
            from promptdiff.production.expert_training import ExpertTrainingConfig, train_expert

            print(train_expert(ExpertTrainingConfig(**_strip(cfg.expert.train))))
        elif cfg.command == "data" and cfg.data.action == "import-prompt-dt":
            from promptdiff.production.prompt_dt_import import import_prompt_dt

            a = cfg.data["import-prompt-dt"]
            for path in import_prompt_dt(a.src, a.family, out_root=a.out_root, env_prefix=a.env_prefix, tasks=a.tasks):
                print(path)
        elif cfg.command == "data" and cfg.data.action == "info":
            from promptdiff.data.hdf5_format import summarise
            from promptdiff.data.minari_io import is_minari_id, summarise_minari

            a = cfg.data.info
            if is_minari_id(a.file):
                if a.family is None:
                    raise ValueError(f"{a.file} is not a file; as a Minari dataset id it needs --family")
                print(json.dumps(summarise_minari(a.file, a.family, minari_root=a.minari_root), indent=1))
            else:
                print(json.dumps(summarise(a.file), indent=1))
        elif cfg.command == "data" and cfg.data.action == "export-minari":
            from promptdiff.data.minari_io import export_minari

            a = cfg.data["export-minari"]
            print(export_minari(a.family, role=a.role, quality=a.quality, root=a.root, dataset_id=a.dataset_id,
                                minari_root=a.minari_root))  # fmt: skip
        elif cfg.command == "data" and cfg.data.action == "import-minari":
            from promptdiff.data.minari_io import import_minari

            a = cfg.data["import-minari"]
            print(import_minari(a.dataset_id, a.family, role=a.role, quality=a.quality, root=a.root, out=a.out,
                                task_field=a.task_field, task_map=a.task_map, minari_root=a.minari_root,
                                overwrite=a.overwrite))  # fmt: skip
        elif cfg.command == "data" and cfg.data.action == "ship-stage1":
            from promptdiff.production.stage1 import ship_stage1

            a = cfg.data["ship-stage1"]
            for path in ship_stage1(a.ckpt, a.family, root=a.root, run_dir=a.run_dir,
                                    record={"note": a.note} if a.note else None):  # fmt: skip
                print(path)
        elif cfg.command == "families":
            from promptdiff.cli.families import families_report

            print(families_report(cfg.families.root))
    except (DatasetError, FileNotFoundError, KeyError, ValueError, ImportError) as err:
        print(f"promptdiff: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
