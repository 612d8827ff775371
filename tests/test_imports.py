"""The package's import graph: no cycle anywhere and no import up the layers, lazy and
type-checking imports included."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import crystalgrid

PACKAGE_DIR = Path(crystalgrid.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub``.
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


#: The layers of the package, lowest first. A module may import modules of its own layer and
#: of the layers below, never one above: lazy imports and imports under ``TYPE_CHECKING``
#: count too (a lower layer names a higher one's types through a Protocol of its own). A
#: module is in the layer of the longest name listed that is it or a package holding it;
#: ``crystalgrid`` itself (the public API) is listed alone.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("crystalgrid._version", "crystalgrid.errors", "crystalgrid.config_base")),
    (
        "helpers",
        (
            "crystalgrid.validity",
            "crystalgrid.remote",
            "crystalgrid.fileio",
            "crystalgrid.jsonio",
            "crystalgrid.jsonstream",
            "crystalgrid.spec",
            "crystalgrid.build_timings",
            "crystalgrid.read_order",
            "crystalgrid.splits",
        ),
    ),
    ("grids", ("crystalgrid.grids", "crystalgrid.filters", "crystalgrid.samples")),
    ("sources", ("crystalgrid.collection", "crystalgrid.sources")),
    ("remote structure clients", ("crystalgrid.mp", "crystalgrid.optimade")),
    ("store", ("crystalgrid.store", "crystalgrid.lock")),
    (
        "builder and dataset",
        (
            "crystalgrid.builder",
            "crystalgrid.dataset",
            "crystalgrid.torch_data",
            "crystalgrid.contracts",
        ),
    ),
    # The reference models, grouped by job: what a run is and where it runs; the networks;
    # decoding (the class map, no model); a trained model loaded; its scores; pictures; the
    # latent space; and the trainer, which nothing in the models imports.
    ("model settings", ("crystalgrid.models.config", "crystalgrid.models.runtime")),
    ("networks", ("crystalgrid.models.nets",)),
    ("decoding", ("crystalgrid.models.decoding",)),
    ("checkpoints", ("crystalgrid.models.checkpoint", "crystalgrid.models.inference")),
    ("scoring", ("crystalgrid.models.scoring",)),
    ("plots", ("crystalgrid.models.plots",)),
    ("latent space", ("crystalgrid.models.latent",)),
    ("training", ("crystalgrid.models.training",)),
    # It builds stores, trains and evaluates: above the builder and the models.
    ("baseline", ("crystalgrid.baseline",)),
    # The models' lazy exports name every layer above, the baseline's names included.
    ("models' public face", ("crystalgrid.models",)),
    ("api and cli", ("crystalgrid", "crystalgrid.__main__", "crystalgrid.cli")),
)


def _layer(name: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> int | None:
    """The index in ``layers`` of module ``name``, or None when no entry holds it."""
    best: tuple[int, int] | None = None  # (length of the name matched, layer)
    for rank, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            holds = name == prefix or ("." in prefix and name.startswith(prefix + "."))
            if holds and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def _upward(
    graph: dict[str, set[str]], layers: tuple[tuple[str, tuple[str, ...]], ...]
) -> list[str]:
    """Every import of ``graph`` from a lower layer's module to a higher layer's, in words."""
    found = []
    for name, imported in sorted(graph.items()):
        mine = _layer(name, layers)
        for other in sorted(imported):
            theirs = _layer(other, layers)
            if mine is not None and theirs is not None and theirs > mine:
                found.append(f"{name} ({layers[mine][0]}) imports {other} ({layers[theirs][0]})")
    return found


def test_every_module_has_a_layer() -> None:
    assert sorted(name for name in _modules() if _layer(name) is None) == []


def test_no_import_runs_up_the_layers() -> None:
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert _upward(graph, LAYERS) == []


def test_layer_check_finds_an_upward_import() -> None:
    layers = (("low", ("pkg.low",)), ("high", ("pkg.high", "pkg")))
    graph = {"pkg.low.a": {"pkg.high"}, "pkg.high": {"pkg.low.b"}, "pkg": {"pkg.low.a"}}
    assert _upward(graph, layers) == ["pkg.low.a (low) imports pkg.high (high)"]
    assert _layer("pkg.low.a.b", layers) == 0 and _layer("pkgx", layers) is None


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(set(_modules()) - {"crystalgrid.__main__"}))
def test_every_module_imports(name: str) -> None:
    if name.startswith("crystalgrid.models") or name == "crystalgrid.torch_data":
        pytest.importorskip("torch")
    if name.startswith("crystalgrid.mp"):
        pytest.importorskip("mp_api")
    importlib.import_module(name)


def test_inference_does_not_import_the_trainer() -> None:
    modules = _modules()
    trainer_users = {
        name
        for name, path in modules.items()
        if "crystalgrid.models.training.loop" in _imported(name, path, modules)
    }
    # Only the verbs that train import the trainer.
    assert trainer_users <= {"crystalgrid.cli.training_verbs", "crystalgrid.baseline.run"}


#: Modules that import without torch (their docstrings say so; the models' face is lazy).
TORCH_FREE = (
    "crystalgrid.models",
    "crystalgrid.models.config",
    "crystalgrid.models.nets.classes",
    "crystalgrid.models.decoding.segmentation",
    "crystalgrid.models.decoding.structure",
    "crystalgrid.models.decoding.peakfit",
    "crystalgrid.models.scoring.distances",
    "crystalgrid.models.scoring.metrics",
    "crystalgrid.models.scoring.generated",
    "crystalgrid.models.scoring.decoders",
    "crystalgrid.models.scoring.predictions",
    "crystalgrid.models.scoring.matching",
    "crystalgrid.models.latent.conditioning",
    "crystalgrid.models.plots",
)


def test_torch_free_modules_import_without_torch() -> None:
    code = (
        "import importlib, sys\n"
        "sys.modules['torch'] = None  # import torch -> ImportError\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve() -> None:
    for name in crystalgrid.__all__:
        assert getattr(crystalgrid, name) is not None
    models = importlib.import_module("crystalgrid.models")
    pytest.importorskip("torch")
    for name in models.__all__:
        assert getattr(models, name) is not None


def test_architecture_page_lists_every_module() -> None:
    page = PACKAGE_DIR.parent / "docs" / "architecture.md"
    if not page.exists():
        pytest.skip("docs/ is not beside the installed package")
    text = page.read_text(encoding="utf-8")
    listed = {
        str(path.relative_to(PACKAGE_DIR.parent))
        for path in PACKAGE_DIR.rglob("*.py")
        if f"`{path.relative_to(PACKAGE_DIR.parent)}`" in text
    }
    every = {str(p.relative_to(PACKAGE_DIR.parent)) for p in PACKAGE_DIR.rglob("*.py")}
    assert sorted(every - listed) == []
