"""docs/recipe_parity.md stays true: its tables are read here and checked against the recipe configs.

Each row names a config field and the value the table claims; the config must
hold that value. A field a recipe sets differently from the defaults it starts
from must have a row, so the table cannot silently miss a change, and every
row that is not "same" must say why.
"""

from __future__ import annotations

import ast
import math
import pathlib
import re

import pytest
from ml_collections import config_dict

import configs.default
import configs.finetune_default
import configs.imagenet_r3d18
from tests.test_configs import load

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "recipe_parity.md"
STATUSES = ("same", "equivalent", "differs", "n/a")
# What each recipe starts from: a field that differs from it needs a row.
BASELINES = {
    "lidc_r3d18.py": lambda: configs.finetune_default.get_config("classification"),
    "bcv_unet_r3d18.py": lambda: configs.finetune_default.get_config("segmentation"),
    "lits_unet_r3d18.py": lambda: configs.finetune_default.get_config("segmentation"),
    "imagenet_r3d18.py": configs.default.get_config,
    "imagenet_r3d18_bf16.py": configs.imagenet_r3d18.get_config,
}


def parse_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """{config file name: rows}, each row {"field", "project", "reference", "source", "status", "why"}."""
    tables: dict[str, list[dict[str, str]]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"## `configs/([\w.]+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), [])
        elif current is not None and line.startswith("| `") and not line.startswith("| field"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 6, f"{DOC.name}: a row needs 6 cells: {line}"
            current.append(dict(zip(("field", "project", "reference", "source", "status", "why"), cells)))
    return tables


TABLES = parse_tables(DOC.read_text())


def literal(cell: str):
    """The Python literal inside a `backticked` cell."""
    match = re.fullmatch(r"`(.*)`", cell)
    assert match, f"expected a `literal`, got {cell!r}"
    return ast.literal_eval(match.group(1))


NOT_A_LITERAL = object()


def reference_literal(cell: str):
    """The reference cell's value when it is a single Python literal (`0.02`), else NOT_A_LITERAL (`SyncBN`)."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    try:
        return ast.literal_eval(match.group(1)) if match else NOT_A_LITERAL
    except (ValueError, SyntaxError):
        return NOT_A_LITERAL


def normalise(value):
    if isinstance(value, (list, tuple)):
        return tuple(normalise(v) for v in value)
    return value


def equal(a, b) -> bool:
    a, b = normalise(a), normalise(b)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return not isinstance(a, (str, bool)) and not isinstance(b, (str, bool)) and math.isclose(a, b, rel_tol=1e-4)
    return type(a) is type(b) and a == b


def field(config: config_dict.ConfigDict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def leaves(config: config_dict.ConfigDict, prefix: str = "") -> dict[str, object]:
    out = {}
    for name, value in config.items():
        if isinstance(value, config_dict.ConfigDict):
            out.update(leaves(value, f"{prefix}{name}."))
        else:
            out[prefix + name] = value
    return out


def rows():
    return [pytest.param(name, row, id=f"{name}:{row['field']}") for name, table in TABLES.items() for row in table]


def test_the_document_has_a_table_for_each_recipe():
    assert set(TABLES) == set(BASELINES)
    assert all(len(table) >= 5 for table in TABLES.values())


@pytest.mark.parametrize("name, row", rows())
def test_each_row_holds_the_configs_value_and_a_reason(name, row):
    assert row["status"] in STATUSES, row
    if row["status"] != "same":
        assert row["why"], f"{name}: the {row['status']!r} row {row['field']} gives no reason"
    if row["field"] == "`-`":  # a value no config field holds: nothing to compare
        assert row["project"] == "`-`", row
        return
    config = load(name)
    claimed = literal(row["project"])
    actual = field(config, row["field"].strip("`"))
    assert equal(actual, claimed), f"{name}: {row['field']} is {actual!r} in the config, {claimed!r} in {DOC.name}"
    reference = reference_literal(row["reference"])
    if row["status"] == "same" and reference is not NOT_A_LITERAL:
        assert equal(reference, claimed), f"{name}: {row['field']} is marked same but the reference has {reference!r}"


def undocumented(name: str, tables: dict[str, list[dict[str, str]]]) -> list[str]:
    """Fields `name` sets differently from its baseline that have no row in `tables`."""
    config, baseline = leaves(load(name)), leaves(BASELINES[name]())
    changed = {k for k, v in config.items() if not equal(v, baseline[k])}
    return sorted(changed - {row["field"].strip("`") for row in tables[name]})


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_field_a_recipe_changes_has_a_row(name):
    missing = undocumented(name, TABLES)
    assert not missing, f"{DOC.name} has no row for {missing} of {name}"


def test_a_wrong_claim_is_caught():
    """The checks can fail: a doctored row and a doctored config are both reported."""
    row = dict(TABLES["lidc_r3d18.py"][0])
    row["project"] = "`34`"
    with pytest.raises(AssertionError, match="`model.depth` is 18 in the config, 34 in"):
        test_each_row_holds_the_configs_value_and_a_reason("lidc_r3d18.py", row)
    row.update(project="`18`", reference="`34`")
    with pytest.raises(AssertionError, match="marked same but the reference has 34"):
        test_each_row_holds_the_configs_value_and_a_reason("lidc_r3d18.py", row)
    row.update(reference="`18`", status="differs")
    with pytest.raises(AssertionError, match="gives no reason"):
        test_each_row_holds_the_configs_value_and_a_reason("lidc_r3d18.py", row)
    assert not equal(0.0005, 0.0006) and equal((1, 2.0), [1, 2.00001]) and not equal(True, 1.0)
    without_warmup = parse_tables(DOC.read_text().replace("| `optimizer.warmup_steps` |", "| `optimizer.warmup_stepz` |"))
    assert undocumented("lidc_r3d18.py", without_warmup) == ["optimizer.warmup_steps"]
