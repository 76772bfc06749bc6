"""Clear the outputs of the notebooks in this folder before committing them.

    python notebooks/strip_outputs.py            # every notebooks/*.ipynb, in place
    python notebooks/strip_outputs.py --check    # exit 1 (naming them) if any notebook holds outputs

Outputs, execution counts and per-cell run metadata are removed; the cells themselves are not
touched. tests/test_notebooks.py fails on a committed notebook that holds outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def strip(nb: nbformat.NotebookNode) -> bool:
    """Clear `nb` in place; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None or "execution" in cell.metadata:
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
            changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every .ipynb beside this script)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that hold outputs")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(Path(__file__).resolve().parent.glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'holds outputs' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
