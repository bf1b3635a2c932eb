"""README.md's values table is the one deploy/values_table.py generates from values.yaml
and values.schema.json: a value added without its row fails here."""

from __future__ import annotations

import importlib.util

from tests.deploy.conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("values_table", ROOT / "deploy" / "values_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_values_table_is_current():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- values-table: begin -->\n", "<!-- values-table: end -->"
    current = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert current == _generator().table(), "run: python deploy/values_table.py, paste into README.md"


def test_every_top_level_value_has_a_row():
    import yaml
    values = yaml.safe_load((ROOT / "helm" / "sluice" / "values.yaml").read_text())
    keys = {row[0].split(".")[0] for row in _generator().rows(
        __import__("json").loads((ROOT / "helm" / "sluice" / "values.schema.json").read_text()), values, {})}
    assert keys == set(values)
