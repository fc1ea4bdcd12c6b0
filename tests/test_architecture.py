"""The package's shape (documentation/architecture.md): imports go one way, from the top layer down, with no
cycle, and no module is longer than 400 lines. The checker reads the source, so it sees imports inside
functions too; its own tests below show that it catches an upward import and a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "boxunet"
MAX_LINES = 400
ROOT = "boxunet"

# top to bottom; a module may import from its own layer or any layer below it, never from one above
LAYERS = (
    # entry points, the one module that knows every trainer, and the workflows that span stages
    # (the package root re-exports the Python API of boxunet.api)
    ("boxunet.cli", "boxunet.trainers", "boxunet.train_folds", "boxunet.prediction", "boxunet.api", ROOT),
    ("boxunet.training.box", "boxunet.kits"),  # the variants: box trainers (stage 2 as a job), KiTS trainers
    ("boxunet.training",),  # the engine: loop, data pipeline, losses, options, distributed, validation
    ("boxunet.ensembling",),  # cross-validation summaries, model selection
    ("boxunet.inference",),  # predictor, sliding window, export
    ("boxunet.boxes", "boxunet.postprocessing"),  # stage-1 pseudo masks, ConvCRF, fusion; postprocessing
    ("boxunet.evaluation",),  # metrics, the box report
    ("boxunet.plan_and_preprocess", "boxunet.fingerprint", "boxunet.preprocessing", "boxunet.nets"),
    ("boxunet.planning",),  # plans
    ("boxunet.io", "boxunet.paths", "boxunet.errors", "boxunet.parallel", "boxunet.cropping",
     "boxunet.benchmarking", "boxunet.version"),  # files, labels, folders, errors, small utilities
)


def package_modules(package: Path) -> dict[str, Path]:
    """Module name -> file of every module of ``package`` (a package's ``__init__`` under the package's name)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _resolve(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(source: str, module: str, is_package: bool, modules) -> set[str]:
    """The modules of ``modules`` that ``source`` (of ``module``) imports, wherever in the file."""
    found = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = _resolve(name, modules)
            # importing a module also runs its packages' __init__, which never counts as an edge
            if target and target != module and not module.startswith(target + "."):
                found.add(target)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {module: module_imports(path.read_text(), module, path.name == "__init__.py", modules)
            for module, path in modules.items()}


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of ``module``'s layer (0 = top): the layer of its longest listed prefix; None if unlisted."""
    matches = [(len(prefix), index) for index, layer in enumerate(layers) for prefix in layer
               if module == prefix or (prefix != ROOT and module.startswith(prefix + "."))]
    return max(matches)[1] if matches else None


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import of a module from a layer above its own, as "importer -> imported"."""
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if layer_of(target, layers) < layer_of(module, layers))


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


@pytest.fixture(scope="module")
def graph():
    return import_graph(package_modules(PACKAGE))


def test_every_module_belongs_to_a_layer(graph):
    unlisted = sorted(module for module in graph if layer_of(module) is None)
    assert not unlisted, f"add these modules to a layer of LAYERS: {unlisted}"


def test_imports_go_down_the_layers(graph):
    assert upward_imports(graph) == []


def test_no_import_cycle(graph):
    assert import_cycles(graph) == []


def test_no_module_over_the_line_limit():
    long = {str(path.relative_to(PACKAGE.parent)): count for path in PACKAGE.rglob("*.py")
            if (count := path.read_text().count("\n")) > MAX_LINES}
    assert long == {}


def test_the_checker_catches_an_upward_import_and_a_cycle(tmp_path):
    package = tmp_path / "boxunet"
    (package / "training").mkdir(parents=True)
    (package / "io").mkdir()
    for init in (package, package / "training", package / "io"):
        (init / "__init__.py").write_text("")
    (package / "io" / "files.py").write_text("def read():\n    from boxunet.training.loop import run\n")
    (package / "training" / "loop.py").write_text("from boxunet.io import files\n\nrun = None\n")
    graph = import_graph(package_modules(package))
    assert graph["boxunet.io.files"] == {"boxunet.training.loop"}, "an import inside a function counts"
    assert upward_imports(graph) == ["boxunet.io.files -> boxunet.training.loop"]
    assert import_cycles(graph) == [["boxunet.io.files", "boxunet.training.loop"]]
    assert layer_of("boxunet.training.box.stage2") == 1 and layer_of("boxunet.training.trainer") == 2
    assert layer_of("boxunet.new_module") is None, "a new top-level module must be given a layer"
