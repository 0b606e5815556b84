"""environment.yml (conda) and pyproject.toml (pip) must list the same dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; CI and environment.yml use 3.11

ROOT = Path(__file__).resolve().parents[1]
# conda names that differ from PyPI names; conda-only helpers
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "cpuonly"}


def _split(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert m, spec
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = dict(_split(d) for d in project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    pip_section: list[str] = []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip_section += item.get("pip", [])
            continue
        name, spec = _split(item)
        if name in CONDA_ONLY:
            continue
        conda[CONDA_TO_PYPI.get(name, name)] = spec
    for item in pip_section:
        name, spec = _split(item)
        conda.setdefault(name, spec)
    assert conda == pip_deps
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python == "python=3.11"
