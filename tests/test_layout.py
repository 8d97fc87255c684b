"""The package layout stays as documented: generic layers import downward only, and modules stay readable.

`vdt_jax/train/` is the generic training system: it knows the `Task` interface
and nothing about the VDT or the networks. Modules stay under 400 lines and
functions under 60, so each concern keeps one obvious, readable place.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "vdt_jax"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "train").glob("*.py")), ids=lambda p: p.name)
def test_the_training_system_knows_neither_the_vdt_nor_the_networks(path):
    forbidden = {name for name in imported_modules(path) if name.startswith(("vdt_jax.vdt", "vdt_jax.models"))}
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


def test_modules_and_functions_stay_short():
    too_long = []
    for path in modules():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}(): {length} lines")
    assert not too_long, "\n".join(too_long)


def test_module_names_are_unique_in_the_package():
    names = [path.name for path in modules() if path.name not in ("__init__.py", "__main__.py")]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
