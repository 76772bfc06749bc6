"""`promptdiff`: one console script for every stage.

    promptdiff collect --family <family>                        expert data -> datasets/<family>/
    promptdiff expert train --config conf/expert/<family>.yaml  train a learned expert (PPO)
    promptdiff data import-prompt-dt SRC --family NAME          convert Prompt-DT's pickles
    promptdiff data info FILE                                   summarise a trajectory file
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


def _info_parser() -> ArgumentParser:
    p = ArgumentParser(description="Validate a trajectory file and print its per-task statistics.")
    p.add_argument("file", type=str)
    return p


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="promptdiff", description="promptdiff: prompt tuning of pre-trained decision transformers. "
                            "Run `promptdiff <command> --help` for each command's options; "
                            "`promptdiff fit|validate|test --config ...` run Lightning (see `promptdiff fit --help`); "
                            "`promptdiff --plugin MODULE <command> ...` loads a plugin with families of one's own first.",
                            version=f"promptdiff {__version__}")  # fmt: skip
    sub = parser.add_subcommands(dest="command")
    sub.add_subcommand("collect", _collect_parser(), help="collect expert data for a task family")
    sub.add_subcommand("benchmark", _benchmark_parser(), help="run a benchmark table (methods x families x seeds)")
    expert = ArgumentParser(description="Learned experts.")
    sub.add_subcommand("expert", expert, help="train the learned experts")
    expert_sub = expert.add_subcommands(dest="action")
    expert_sub.add_subcommand("train", _expert_train_parser(), help="train a PPO expert")
    data = ArgumentParser(description="Dataset tools.")
    sub.add_subcommand("data", data, help="import and inspect datasets")
    data_sub = data.add_subcommands(dest="action")
    data_sub.add_subcommand("import-prompt-dt", _import_parser(), help="import Prompt-DT pickles")
    data_sub.add_subcommand("info", _info_parser(), help="summarise a trajectory file")
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
    from promptdiff.cli.lightning_cli import LIGHTNING_COMMANDS

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

            print(json.dumps(summarise(cfg.data.info.file), indent=1))
    except (DatasetError, FileNotFoundError, KeyError, ValueError, ImportError) as err:
        print(f"promptdiff: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
