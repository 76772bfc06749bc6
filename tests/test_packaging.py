"""setup.py and environment.yml ask for the same pinned packages; the README commands are CI's."""

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def setup_requirements() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    reqs = set(found["INSTALL_REQUIRES"])
    for extra in found["EXTRAS_REQUIRE"].values():
        reqs |= set(extra)
    return reqs


def conda_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {r for r in pip if not r.startswith("-e")}


def test_setup_and_environment_pin_the_same_packages():
    setup_reqs, conda_reqs = setup_requirements(), conda_requirements()
    assert setup_reqs == conda_reqs, (setup_reqs ^ conda_reqs)
    assert all(re.search(r"==\d", r) for r in setup_reqs), "every requirement is pinned"


def test_no_forbidden_packages():
    names = {re.split(r"[\[=<>]", r)[0].lower() for r in setup_requirements()}
    assert not names & {"gym", "mujoco-py", "mujoco_py"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_lines = [line for line in readme.splitlines() if line.endswith("pytest") and "pip install" in line]
    assert len(test_lines) == 1, "the README shows exactly one install-and-test command line"
    assert "readme_command" in ci and "pytest" in test_lines[0]
    assert "pip install torch==2.13.0" in test_lines[0]
