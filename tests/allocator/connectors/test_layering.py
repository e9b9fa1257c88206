"""The import contract "The domain never imports a connector" (pyproject.toml) names every
module of allocator but connectors: a new module of the engine is covered the day it lands."""

import pkgutil
import tomllib
from pathlib import Path

import allocator

ROOT = Path(__file__).resolve().parents[3]


def test_the_connector_contract_covers_every_allocator_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "connectors"
    )
    modules = {
        f"allocator.{m.name}"
        for m in pkgutil.iter_modules(allocator.__path__)
        if m.name not in {"connectors", "migrations", "management"}
    }
    assert modules - set(contract["source_modules"]) == set()
    assert contract["forbidden_modules"] == ["allocator.connectors"]
