"""The package's shape: layers import downwards only (no import cycle inside ``imserver``),
and no module, class or function grows past the sizes a reader can hold in mind."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "imserver")
GENERATED = os.path.join(PACKAGE, "cluster", "pb")  # protoc's output
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 600, 300, 80


def modules() -> "dict[str, str]":
    """Dotted module name -> path, for every source file of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        if folder.startswith(GENERATED):
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports_of(module: str, path: str, known) -> "set[str]":
    """The package's modules that ``module`` imports (``from x import name`` counts as the
    submodule x.name when there is one)."""
    is_package = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:None if is_package else -1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != module}


def import_cycles(graph) -> "list[list[str]]":
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_inside_the_package():
    known = modules()
    graph = {m: imports_of(m, p, known) for m, p in known.items()}
    assert "imserver.web.app" in graph and "imserver.node.node" in graph
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_blueprints_reach_the_node_without_the_app_factory():
    known = modules()
    for name in ("acc", "api", "home", "metrics", "system"):
        module = f"imserver.web.{name}"
        assert "imserver.web.app" not in imports_of(module, known[module], known), module


def oversized() -> "list[str]":
    found = []
    for path in modules().values():
        source = open(path, encoding="utf-8").read()
        where = os.path.relpath(path, ROOT)
        if source.count("\n") > MAX_MODULE_LINES:
            found.append(f"{where}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            limit = (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else
                     MAX_FUNCTION_LINES if isinstance(node, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef)) else None)
            if limit and node.end_lineno - node.lineno + 1 > limit:
                found.append(f"{where}:{node.lineno} {node.name}: "
                             f"{node.end_lineno - node.lineno + 1} lines")
    return found


def test_sizes_stay_readable():
    assert oversized() == []
