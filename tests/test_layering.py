"""The modules of ptft_jax form layers: a module imports modules of its own layer or lower ones,
never higher, and no chain of imports (those inside functions included) comes back to where it
started. A new module must be placed in ``LAYERS`` below before this test passes."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A name is a module of ptft_jax ("ptft_jax" is the package's __init__);
# "models.*" is every module in ptft_jax/models/, its __init__ included.
LAYERS = {
    0: ["ptft_jax", "errors", "ops", "sharding", "losses", "scores", "malloc", "environment"]
    + ["stopping", "distributed", "bench_workload", "bench_peers"],
    1: ["models.*", "data.*"],
    2: ["tasks.*"],
    3: ["steps", "optim", "checksums", "checkpoint", "recovery", "best", "weights", "metrics"]
    + ["defaults", "config", "hf"]
    + ["workdir", "aot"]
    + ["figures", "cli", "runlock", "plan", "ending"]
    + ["suitespec", "suite_data", "suite_report", "suite_plan", "baselines"],  # a suite's parts
    4: ["train"],
    # The runner of repeated trainings: above train (it runs it), below the commands (they
    # use it); a layer of its own, so train can never import it.
    4.5: ["jobs"],
    5: ["evaluate", "predict", "export", "bench", "plot", "learning_curve", "prepare", "generate"]
    + ["suite"],
}
ENTRY_POINTS = 5  # the layer of the commands; none imports another
RUNS_TRAINING = {"learning_curve", "suite"}  # the entry points that may import train or jobs
TRAINING = {"ptft_jax.train", "ptft_jax.jobs"}  # what runs training
APART = {"models", "data"}  # packages that never import each other


def _short(module: str) -> str:
    return "ptft_jax" if module == "ptft_jax" else module.removeprefix("ptft_jax.")


def layer_of(module: str) -> int | None:
    short = _short(module)
    for layer, names in LAYERS.items():
        for name in names:
            if short == name or name.endswith(".*") and f"{short}.".startswith(name[:-1]):
                return layer
    return None


def imports(tree: ast.AST, module: str, is_package: bool, root=ROOT) -> dict[str, str]:
    """``{imported ptft_jax module: the statement}`` of every import anywhere in ``tree``."""

    def exists(name):
        path = root / name.replace(".", "/")
        return path.with_suffix(".py").is_file() or path.is_dir()

    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its own package, or one above per extra dot
                parts = module.split(".")[: None if is_package else -1]
                base = ".".join(parts[: len(parts) - node.level + 1] + [base] * bool(base))
            # from m import x: module m.x if there is one, else an attribute of m
            names = [f"{base}.{a.name}" if exists(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in names:  # the package's own attributes (__version__) are no edge
            if name.split(".")[0] == "ptft_jax" and name not in ("ptft_jax", module):
                found.setdefault(name, f"line {node.lineno}: `{ast.unparse(node)}`")
    return found


def module_graph() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``({module: {imported: statement}}, {module: its file})`` of every module of ptft_jax."""
    graph, files = {}, {}
    for path in sorted((ROOT / "ptft_jax").rglob("*.py")):
        rel = path.relative_to(ROOT)
        is_package = path.name == "__init__.py"
        module = ".".join(rel.parent.parts if is_package else rel.with_suffix("").parts)
        graph[module] = imports(ast.parse(path.read_text(), str(rel)), module, is_package)
        files[module] = str(rel)
    return graph, files


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (``[a, b, a]``) for every back edge a depth-first walk of ``graph`` meets."""
    found, state, stack = [], {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                found.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def problems(graph: dict[str, dict[str, str]], files: dict[str, str] | None = None) -> list[str]:
    """Every broken rule in ``graph``, one line each naming the file, the import, the layers."""
    out = [f"import cycle: {c}" for c in cycles(graph)]
    for m, imported in sorted(graph.items()):
        here, file = layer_of(m), (files or {}).get(m, m)
        if here is None:
            out.append(f"{file} ({m}) is in no layer: add it to LAYERS in tests/test_layering.py")
            continue
        for n, statement in sorted(imported.items()):
            there = layer_of(n)
            if n not in graph:
                out.append(f"{file} {statement}: {m} imports {n}, which is no module of ptft_jax")
                continue
            if there is None:
                continue  # reported as a module of its own
            said = f"{file} {statement}: {m} (layer {here}) imports {n} (layer {there})"
            if there > here:
                out.append(f"{said}, a higher layer")
            if here == there == ENTRY_POINTS:
                out.append(f"{said}: an entry point imports no other entry point")
            if here == ENTRY_POINTS and n in TRAINING and _short(m) not in RUNS_TRAINING:
                out.append(f"{said}: only {sorted(RUNS_TRAINING)} may run training")
            if {_short(m).split(".")[0], _short(n).split(".")[0]} == APART:
                out.append(f"{said}: {' and '.join(sorted(APART))} never import each other")
    return out


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    found = problems(*module_graph())
    assert not found, "\n".join(found)


def test_the_checker_finds_each_kind_of_broken_rule():
    lc, bert, config, steps = "learning_curve", "models.bert", "config", "steps"
    edges = {"errors": ["train"], "train": [config], config: [steps], steps: [config, "gone"]}
    edges |= {"plot": ["train", "evaluate"], "evaluate": [], lc: ["train"], "shiny": []}
    edges |= {"jobs": ["train"], "train": [config, "jobs"], "predict": ["jobs"], lc: ["jobs"]}
    edges |= {bert: ["data.pipeline"], "data.pipeline": ["errors"]}
    graph = {
        f"ptft_jax.{m}": {f"ptft_jax.{n}": f"line {i}" for i, n in enumerate(ns)}
        for m, ns in edges.items()
    }
    found = problems(graph)
    assert "import cycle: ['ptft_jax.config', 'ptft_jax.steps', 'ptft_jax.config']" in found
    upward = "ptft_jax.errors line 0: ptft_jax.errors (layer 0) imports ptft_jax.train (layer 4)"
    assert f"{upward}, a higher layer" in found
    for text in (
        "plot (layer 5) imports ptft_jax.evaluate (layer 5): an entry point imports no other",
        "plot (layer 5) imports ptft_jax.train (layer 4): only ['learning_curve', 'suite'] may run",
        "bert (layer 1) imports ptft_jax.data.pipeline (layer 1): data and models never",
        "ptft_jax.shiny (ptft_jax.shiny) is in no layer: add it to LAYERS",
        "imports ptft_jax.gone, which is no module of ptft_jax",
        "ptft_jax.train (layer 4) imports ptft_jax.jobs (layer 4.5), a higher layer",
        "predict (layer 5) imports ptft_jax.jobs (layer 4.5): only ['learning_curve', 'suite']",
        "import cycle: ['ptft_jax.train', 'ptft_jax.jobs', 'ptft_jax.train']",
    ):
        assert any(text in p for p in found), (text, found)
    # learning_curve may run training (train or jobs); data may import errors
    assert len(found) == 10, found
    assert problems({"ptft_jax.train": {"ptft_jax.errors": "line 1"}, "ptft_jax.errors": {}}) == []


def test_imports_resolve_to_modules(tmp_path):
    for name in ("__init__", "cli", "figures", "errors", "data/__init__", "data/pipeline"):
        (tmp_path / "ptft_jax" / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ptft_jax" / f"{name}.py").touch()
    tree = ast.parse(
        "from ptft_jax import __version__, cli\nimport numpy\n"
        "def f():\n    from ptft_jax.figures import plot_curves\n    from . import errors\n"
        "    from .data import pipeline\n    import ptft_jax.data\n"
        "    from ptft_jax.data import x\n"
    )
    found = imports(tree, "ptft_jax.plot", False, tmp_path)
    names = ("cli", "data", "data.pipeline", "errors", "figures")
    assert sorted(found) == [f"ptft_jax.{m}" for m in names]
    assert found["ptft_jax.figures"] == "line 4: `from ptft_jax.figures import plot_curves`"
