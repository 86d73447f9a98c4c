"""The import graph of coat_ms, convert and parity_tests: no cycle, and no arrow against the layer order
that docs/architecture.md writes down (its "Layers" table is read here, so the page and the code cannot
drift apart).

The graph is read from the source with ``ast``, so every import statement counts: at module level, inside
functions (lazy imports), behind ``if`` and ``try``.  What an import depends on:

* ``import a.b.c``: the module a.b.c (the deepest part of the name that is a module here);
* ``from p import n``: the module p (the names of p come from p's ``__init__``) and, where p.n is a
  module, p.n as well; so a package ``__init__`` that imports its submodules while a submodule imports
  from the package is a cycle, as is a submodule importing its own package's public names;
* importing a module runs the ``__init__`` of every package above it that the importer is not inside
  itself: those packages count too.
"""
import ast
import os
import re

import pytest

from helpers import ROOT

PACKAGES = ("coat_ms", "convert", "parity_tests")
ARCHITECTURE = os.path.join(ROOT, "docs", "architecture.md")


def modules():
    """{module name: file path} of every .py file of the packages (a package is named by its __init__)."""
    found = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return found


def _ancestors(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class Graph:
    def __init__(self):
        self.files = modules()
        self.edges = {name: set() for name in self.files}    # module -> modules it imports
        self.unseen = []                                      # imports the graph cannot follow
        for name, path in self.files.items():
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                for target in self._targets(name, node):
                    self._add(name, target)

    def _module(self, dotted):
        """The deepest part of ``dotted`` that is a module of the packages (None for other libraries)."""
        while dotted and dotted not in self.files:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def _is_package(self, name):
        return self.files[name].endswith("__init__.py")

    def _targets(self, name, node):
        if isinstance(node, ast.Import):
            return [self._module(alias.name) for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if self._is_package(name) else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            return [self._module(base)] + [self._module(f"{base}.{alias.name}") for alias in node.names]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__"):
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str) and \
                    not argument.value.startswith("."):
                return [self._module(argument.value)]
            self.unseen.append(f"{name}: line {node.lineno}")
        return []

    def _add(self, importer, target):
        """``importer`` depends on ``target`` and on the packages above it that it is not inside itself."""
        if target is None or target == importer:
            return
        self.edges[importer].add(target)
        inside = set(_ancestors(importer)) | {importer}
        self.edges[importer].update(p for p in _ancestors(target) if p not in inside and p in self.files)

    def cycles(self):
        """The strongly connected components with more than one module (Tarjan's algorithm)."""
        index, low, stack, on_stack, found = {}, {}, [], set(), []

        def visit(v):
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(self.edges[v]):
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
                    found.append(sorted(component))

        for v in sorted(self.edges):
            if v not in index:
                visit(v)
        return found


def documented_layers():
    """[(layer title, [module names])] from the table under '## Layers' in docs/architecture.md, lowest first."""
    text = open(ARCHITECTURE, encoding="utf-8").read()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if re.match(r"\|\s*\d", line)]
    return [(title.strip(), re.findall(r"`([\w.]+)`", names)) for title, names in rows]


def layer_of(module, layers):
    """Index of the layer whose entry names ``module`` or the package above it, the longest such entry;
    a top-level package's own entry (``coat_ms``) names only its ``__init__``."""
    best = None
    for i, (_, names) in enumerate(layers):
        for entry in names:
            covers = module == entry or ("." in entry or entry != "coat_ms") and module.startswith(entry + ".")
            if covers and (best is None or len(entry) > len(best[1])):
                best = (i, entry)
    return None if best is None else best[0]


@pytest.fixture(scope="module")
def graph():
    return Graph()


def test_the_reader_sees_the_imports_that_make_a_cycle():
    """The rules on small cases: a package importing its submodules and a submodule importing from the
    package; a lazy import inside a function; an import of a package's submodule running its __init__."""
    g = Graph.__new__(Graph)
    g.files = {"p": "p/__init__.py", "p.a": "p/a.py", "p.b": "p/b.py", "q": "q/__init__.py", "q.c": "q/c.py"}
    g.edges = {name: set() for name in g.files}
    g.unseen = []
    sources = {"p": "from . import a\n", "p.a": "from . import b\n", "p.b": "def f():\n    import q.c\n",
               "q": "", "q.c": "from p.a import x\n"}
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            for target in g._targets(name, node):
                g._add(name, target)
    assert g.edges == {"p": {"p.a"}, "p.a": {"p", "p.b"}, "p.b": {"q", "q.c"}, "q": set(), "q.c": {"p", "p.a"}}
    assert g.cycles() == [["p", "p.a", "p.b", "q.c"]]


def test_no_import_cycle(graph):
    assert graph.cycles() == []


def test_every_import_is_visible(graph):
    assert graph.unseen == [], "imports by computed names, which this test cannot follow"


def test_every_module_has_a_documented_layer():
    layers = documented_layers()
    assert len(layers) >= 4, f"docs/architecture.md: no layer table found under '## Layers' ({layers})"
    missing = [m for m in sorted(modules()) if layer_of(m, layers) is None]
    assert missing == [], f"modules without a layer in docs/architecture.md's 'Layers' table: {missing}"


def test_no_import_points_up_the_layers(graph):
    layers = documented_layers()
    upward = [f"{a} ({layers[layer_of(a, layers)][0]}) imports {b} ({layers[layer_of(b, layers)][0]})"
              for a in sorted(graph.edges) for b in sorted(graph.edges[a])
              if layer_of(a, layers) is not None and layer_of(b, layers) is not None
              and layer_of(b, layers) > layer_of(a, layers)]
    assert upward == []
