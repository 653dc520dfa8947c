"""Loading files never runs code: every torch.load in the package and the benchmarks passes weights_only=True,
so an environment variable (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) or another torch cannot turn pickled code on."""

import ast

import pytest

from tests.conftest import ROOT

SOURCES = sorted([*(ROOT / "mke_ray").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])


def torch_loads(path):
    """(line, weights_only value or None) of every ``torch.load(...)`` call in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
            given = {kw.arg: kw.value for kw in node.keywords}
            value = given.get("weights_only")
            yield node.lineno, value.value if isinstance(value, ast.Constant) else None


def test_the_scan_finds_the_calls_it_checks():
    found = [(path.relative_to(ROOT).as_posix(), line) for path in SOURCES for line, _ in torch_loads(path)]
    files = {path for path, _ in found}
    assert {"mke_ray/methods/teacher.py", "mke_ray/models/segmentation.py",
            "mke_ray/models/events.py", "benchmarks/gpu_check.py"} <= files


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_every_torch_load_is_weights_only(path):
    unsafe = [line for line, weights_only in torch_loads(path) if weights_only is not True]
    assert not unsafe, f"{path.relative_to(ROOT)}: torch.load without weights_only=True at lines {unsafe}"
