"""Reading dataset cards: `<root>/<family>/card.json`, and the normalised score they define.

The card (written by `promptdiff collect`, see `promptdiff.production.cards`) records per task the
expert's and a uniform random policy's mean return. They define the normalised score used by every
evaluation, computed only here:

    score = (return - random) / (expert - random)      0 for the random policy, 1 for the expert
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def card_path(family, root: str | Path = "datasets") -> Path:
    from promptdiff.envs import get_family

    return Path(root) / get_family(family).dataset_family / "card.json"


def load_card(family, root: str | Path = "datasets") -> dict:
    """The card of a family's data (a name or TaskFamily); FileNotFoundError names the command that writes it."""
    from promptdiff.envs import get_family

    fam = get_family(family)
    path = card_path(fam, root)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset card not found; write it with `{fam.collect_command(root=root)}`")
    return json.loads(path.read_text())


class ScoreCard:
    """Per-task (random, expert) mean returns of one family's card, and the normalised score.

    A missing card or task gives None scores and ONE RuntimeWarning per (family, root) in a process.
    """

    _warned: set[tuple[str, str]] = set()

    def __init__(self, family, root: str | Path = "datasets"):
        from promptdiff.envs import get_family

        self.family = get_family(family)
        self.root = Path(root)
        try:
            self.tasks = load_card(self.family, root)["tasks"]
        except FileNotFoundError as err:
            self._warn(f"{err}; normalised scores are None")
            self.tasks = {}

    def _warn(self, message: str) -> None:
        key = (self.family.name, str(self.root.resolve()))
        if key not in ScoreCard._warned:
            ScoreCard._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def bounds(self, task: int) -> tuple[float, float] | None:
        """(random_return, expert_return) of a task, None where the card has none."""
        entry = self.tasks.get(str(int(task)))
        if entry is None or entry.get("expert_return") is None or entry.get("random_return") is None:
            if self.tasks:
                self._warn(f"{self.family.name}: dataset card under {self.root} has no returns for task {task}; "
                           "its normalised score is None")  # fmt: skip
            return None
        return float(entry["random_return"]), float(entry["expert_return"])

    def score(self, task: int, mean_return: float) -> float | None:
        """(mean_return - random) / (expert - random), or None."""
        b = self.bounds(task)
        return None if b is None else (float(mean_return) - b[0]) / (b[1] - b[0])
