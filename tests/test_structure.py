"""The house keeps its shape: dependencies between lens_widget modules run one way, no module
reaches into another's private names, and each fact (metric names) has one home per language
that agree with each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from lens_widget import metrics

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "lens_widget"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken) for every import that runs when ``path`` is imported or
    its functions run (imports under ``if TYPE_CHECKING:`` are for type checkers only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, names in _runtime_imports(path):
            # `from . import x` names a submodule; `from .a import b` the module a
            for cand in [f"{target}.{n}" for n in names] + [target]:
                if cand in modules and cand != mod:
                    graph[mod].add(cand)
                    break
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    graph = _graph()
    # packages' __init__ re-export their children: an edge child -> package is the cycle to find
    assert _cycles(graph) == []


def test_the_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


#: Every module of the package, by layer: a module imports only from its own layer or below.
LAYERS = [
    ["lens_widget._version", "lens_widget.arch", "lens_widget.loading", "lens_widget.devices", "lens_widget.tokens", "lens_widget.metrics",
     "lens_widget.progress", "lens_widget.schema", "lens_widget.unembed", "lens_widget.corpus", "lens_widget.lens_files",
     "lens_widget.certified", "lens_widget.contributions", "lens_widget.scales"],
    ["lens_widget.inputs", "lens_widget.sites", "lens_widget.lowrank", "lens_widget.figure"],
    ["lens_widget.reduce"],  # torch only: travels by value into nnsight traces
    ["lens_widget.sources.intrace"],  # the lens next to a remote model: reduce, unembed, schema only
    ["lens_widget.sources", "lens_widget.sources.base", "lens_widget.sources.hooks", "lens_widget.sources.nnsight", "lens_widget.cache", "lens_widget.hooked"],
    ["lens_widget.decoders"],
    ["lens_widget.tuned_training"],
    ["lens_widget.tuned_lens", "lens_widget.jacobian_training"],
    ["lens_widget.jacobian_lens"],
    ["lens_widget.result"],
    ["lens_widget.compare"],
    ["lens_widget.tutorial", "lens_widget.cells", "lens_widget.compare_run", "lens_widget.generation", "lens_widget.patching",
     "lens_widget.attribution"],
    ["lens_widget.engine"],
    ["lens_widget.wire"],
    ["lens_widget.widget.requests", "lens_widget.widget.tasks", "lens_widget.widget.export", "lens_widget.widget.viewing"],
    ["lens_widget.widget.session"],
    ["lens_widget.widget.comparing", "lens_widget.widget.generating", "lens_widget.widget.sweeping"],
    ["lens_widget.widget", "lens_widget.widget.widget", "lens_widget.plots"],
    ["lens_widget.cli"],
    ["lens_widget", "lens_widget.__main__"],
]


def test_every_module_has_a_layer():
    graph = _graph()
    ranked = {m for layer in LAYERS for m in layer}
    assert sorted(set(graph) - ranked) == [], "add new modules to LAYERS"


def test_layers_depend_one_way():
    """Each module imports only from its own layer or those below (runtime and in-function imports)."""
    graph = _graph()
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = [(a, b) for a, deps in graph.items() for b in deps if a in rank and b in rank and rank[b] > rank[a]]
    assert upward == [], f"imports against the layering: {upward}"


def test_the_layering_check_sees_an_upward_import():
    graph = _graph()
    graph["lens_widget.sources.intrace"].add("lens_widget.engine")  # what a careless edit would add
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert any(rank[b] > rank[a] for a, deps in graph.items() for b in deps if a in rank and b in rank)


def test_the_cycle_check_sees_a_runtime_cycle_through_an_in_function_import(tmp_path):
    """An in-function import closes a cycle at run time: the graph counts it."""
    pkg = tmp_path / "lens_widget"
    pkg.mkdir()
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    edges = {p.stem: {t.rpartition('.')[2] for t, _ in _runtime_imports_in(p, tmp_path)} for p in pkg.glob("*.py")}
    assert _cycles({k: {v for v in vs if v in edges} for k, vs in edges.items()}) == [["a", "b"]]


def _runtime_imports_in(path: Path, root: Path) -> list[tuple[str, list[str]]]:
    global ROOT
    saved, ROOT = ROOT, root
    try:
        return _runtime_imports(path)
    finally:
        ROOT = saved


def test_no_private_names_across_modules():
    """``from .x import _name`` and ``module._name`` of another lens_widget module are knots."""
    offenders = []
    for path in PKG.rglob("*.py"):
        for target, names in _runtime_imports(path):
            if target.startswith("lens_widget"):
                offenders += [f"{path.relative_to(ROOT)}: from {target} import {n}" for n in names if n.startswith("_") and n != "__version__"]
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(r"\b(?:lens|hooked|result|reduce|engine|decoders|wire|plots|rec|recorder|reducer|session|tasks)\._[a-z]\w*", text)]
    assert offenders == []


def _ts_const(name: str) -> list[str]:
    text = (ROOT / "js" / "src" / "metrics.ts").read_text(encoding="utf-8")
    m = re.search(rf"export const {name} = \[([^\]]*)\] as const;", text)
    assert m, f"{name} not found on one line in js/src/metrics.ts"
    return re.findall(r'"([^"]+)"', m.group(1))


@pytest.mark.parametrize(("ts", "py"), [("METRIC_NAMES", metrics.GRID_METRICS), ("TRAJECTORY_METRICS", metrics.TRAJECTORY_METRICS), ("COMPARE_METRICS", metrics.COMPARE_METRICS)])
def test_metric_names_are_the_same_in_python_and_js(ts, py):
    assert tuple(_ts_const(ts)) == tuple(py)


def test_metric_names_live_in_one_place_per_language():
    """No other Python module spells the grid metric list out."""
    literal = re.compile(r'"top1_prob",\s*"next_prob"')
    spelled = [p.relative_to(ROOT) for p in PKG.rglob("*.py") if p.name != "metrics.py" and literal.search(p.read_text(encoding="utf-8"))]
    spelled += [p.relative_to(ROOT) for p in (ROOT / "js" / "src").rglob("*.ts") if p.name != "metrics.ts" and literal.search(p.read_text(encoding="utf-8"))]
    assert spelled == []


_TS_CELL_ROW = re.compile(r'\s*\{ wire: "(\w+)", field: "(\w+)", dtype: "(\w+)", fill: (-?\d+|NaN), axis: "(k|M|)" \},')


def _ts_cell_arrays() -> list[tuple[str, str, str, float, str]]:
    """The rows of ``CELL_ARRAYS`` in js/src/schema.ts: (wire, field, dtype, fill, axis), one row a line."""
    text = (ROOT / "js" / "src" / "schema.ts").read_text(encoding="utf-8")
    m = re.search(r"^export const CELL_ARRAYS = \[\n(.*?)\n\] as const;$", text, re.S | re.M)
    assert m, "CELL_ARRAYS not found in js/src/schema.ts as `export const CELL_ARRAYS = [` ... `] as const;`"
    rows = []
    for line in m.group(1).splitlines():
        row = _TS_CELL_ROW.fullmatch(line)
        assert row, f"js/src/schema.ts: not a plain row of CELL_ARRAYS: {line.strip()!r}"
        wire, name, dtype, fill, axis = row.groups()
        rows.append((wire, name, dtype, float(fill), axis))
    return rows


def _same_fill(x: float) -> object:
    return "NaN" if x != x else float(x)  # NaN = NaN; False = 0, -1 = -1


def test_cell_arrays_are_the_same_in_python_and_js():
    """js/src/schema.ts mirrors the wired rows of schema.CELL_FIELDS: names in order, LensData
    field (camelCase), dtype (the wire rule applied to the row's kind), fill and trailing axis."""
    import numpy as np

    from lens_widget.schema import CELL_FIELDS
    from lens_widget.wire import wire_dtype

    kind = {"int": np.int64, "float": np.float32, "bool": np.bool_}
    camel = lambda name: re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)  # noqa: E731
    py = [(f.name, camel(f.name), wire_dtype(np.zeros(0, kind[f.kind])), _same_fill(f.fill), f.axis) for f in CELL_FIELDS if f.wire]
    ts = [(wire, name, dtype, _same_fill(fill), axis) for wire, name, dtype, fill, axis in _ts_cell_arrays()]
    assert ts == py


def test_cell_arrays_live_in_one_place_in_js():
    """No other js/src module spells the cell arrays out (by wire name or as typed fields)."""
    literal = re.compile(r'"topk_probs"|"tracked_logit"|\btopkProbs: Float32Array|\btrackedLogit: Float32Array')
    spelled = [p.relative_to(ROOT) for p in (ROOT / "js" / "src").rglob("*.ts") if p.name != "schema.ts" and literal.search(p.read_text(encoding="utf-8"))]
    assert spelled == []


def test_every_cell_array_follows_the_schema():
    """LensResult's per-cell fields, the store, the reducer's outputs and the wire's keys are
    the schema's rows, in its order (one table, lens_widget/schema.py)."""
    import dataclasses

    import torch

    from lens_widget.reduce import cell_outputs
    from lens_widget.result import CellStore, LensResult
    from lens_widget.schema import CELL_KEYS, WIRE_KEYS
    from lens_widget.wire import result_to_wire

    fields = [f.name for f in dataclasses.fields(LensResult)]
    assert [f for f in fields if f in CELL_KEYS] == list(CELL_KEYS)
    assert list(CellStore(1, 2, 3, 4, 5).a) == list(CELL_KEYS)
    r, g = 6, 2
    stats = (torch.ones(r, 2, dtype=torch.int32), torch.zeros(r), torch.zeros(r), torch.zeros(r))
    out = cell_outputs(stats, torch.zeros(r, 3, dtype=torch.long), torch.zeros(r, 3), torch.zeros(r), torch.zeros(r, 1),
                       torch.ones(r, dtype=torch.bool), torch.zeros(r, dtype=torch.bool), torch.zeros(r // g), g)
    assert set(out) == set(CELL_KEYS)
    from fakes import make_result

    wired = [k for k in result_to_wire(make_result()) if k in CELL_KEYS]
    assert wired == list(WIRE_KEYS)
