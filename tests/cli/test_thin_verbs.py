"""The command line stays thin (docs/architecture.md, "Rules the layout keeps"): a verb parses
its options, calls the library and prints; logic lives in the library, where Python users get
it too."""

from __future__ import annotations

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "crystalgrid" / "cli"
#: The most statements a verb's body may hold (the largest, evaluate, holds 38).
MAX_STATEMENTS = 40


def _verbs() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command"
                for d in node.decorator_list
            ):
                found.append((path.name, node))
    return found


def test_every_verb_is_found():
    names = {node.name for _, node in _verbs()}
    assert {"build", "info", "fetch_command", "evaluate_cmd", "sample_cmd", "train_cmd"} <= names


def test_no_verb_holds_logic():
    heavy = []
    for file, node in _verbs():
        statements = sum(isinstance(n, ast.stmt) for n in ast.walk(node)) - 1
        if statements > MAX_STATEMENTS:
            heavy.append(f"{file}:{node.name} ({statements} statements)")
    assert heavy == [], "move the logic of these verbs into the library"


def test_results_are_written_by_one_writer():
    """No verb writes JSON itself: results go through crystalgrid.jsonio.write_results."""
    for path in sorted(CLI.glob("*.py")):
        assert "write_text(json.dumps" not in path.read_text(), path.name
