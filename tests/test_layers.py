"""The layers of docs/architecture.md: every import of a promptdiff module (also the lazy ones inside
functions) points down the stack, so there are no import cycles between layers; only the command line
imports the data-producing package; the data layer does not know the models."""

import ast
import collections
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "promptdiff"

# lower number = lower layer; a module may import only from strictly lower layers (or its own)
RANK = {"promptdiff": 0, "units": 0, "safe_io": 0, "lifetime": 0, "threads": 0, "stats": 0, "prompt": 1, "envs": 2, "data": 3, "models": 3, "optim": 3, "production": 4,
        "rollout": 4, "viz": 4, "methods": 5, "callbacks": 6, "benchmark": 7, "cli": 8}  # fmt: skip


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__init__" else "promptdiff"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """layer -> {(imported layer, file)} over every import statement of the package."""
    edges = collections.defaultdict(set)
    for path in SRC.rglob("*.py"):
        here = _layer("promptdiff." + ".".join(path.relative_to(SRC).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("promptdiff"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("promptdiff")]
            else:
                continue
            for target in targets:
                if _layer(target) != here:
                    edges[here].add((_layer(target), str(path.relative_to(SRC))))
    return edges


def test_every_module_belongs_to_a_known_layer():
    layers = {_layer("promptdiff." + ".".join(p.relative_to(SRC).with_suffix("").parts)) for p in SRC.rglob("*.py")}
    assert layers <= set(RANK), sorted(layers - set(RANK))


def test_imports_point_down_the_stack():
    upward = [(src, dst, f) for src, found in _imports().items() for dst, f in found if RANK[dst] >= RANK[src]]
    assert not upward, "imports that point up (or sideways) between layers: " + "; ".join(
        f"{f}: {src} imports {dst}" for src, dst, f in sorted(upward))


def test_only_the_command_line_imports_data_production():
    users = {src for src, found in _imports().items() for dst, _ in found if dst == "production"}
    assert users <= {"cli"}, users


def test_the_data_layer_does_not_know_the_models():
    assert not {dst for dst, _ in _imports()["data"]} & {"models", "methods", "rollout", "production"}
