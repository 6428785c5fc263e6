"""The conda environments of the rules agree with pyproject.toml (same packages, same bounds)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))


def _split(requirement: str) -> tuple[str, str]:
    """'torch>=2.4,<2.15' -> ('torch', '<2.15,>=2.4'): normalised name and sorted specifiers."""
    requirement = requirement.split(";")[0].split("#")[0].strip()
    match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", requirement)
    assert match, f"unparseable requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1).split("[")[0]).lower()
    specs = ",".join(sorted(s.strip() for s in match.group(2).split(",") if s.strip()))
    return name, specs


def pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(_split(r) for r in data["project"]["dependencies"])


def env_requirements(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections, f"{path.name}: no pip section"
    return dict(_split(r) for r in pip_sections[0])


def test_every_env_pins_exactly_what_pyproject_pins():
    project = pyproject_requirements()
    assert ENVS, "no envs/*.yaml"
    for path in ENVS:
        for name, specs in env_requirements(path).items():
            assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
            assert specs == project[name], (
                f"{path.name}: {name}{specs} but pyproject.toml says {name}{project[name]}"
            )


def test_every_pyproject_dependency_is_in_some_env():
    covered = set()
    for path in ENVS:
        covered |= set(env_requirements(path))
    missing = sorted(set(pyproject_requirements()) - covered)
    assert not missing, f"pyproject.toml dependencies in no envs/*.yaml: {missing}"


def test_envs_use_the_supported_python():
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["requires-python"] == ">=3.11,<3.13"
    for path in ENVS:
        deps = yaml.safe_load(path.read_text(encoding="utf-8"))["dependencies"]
        pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
        assert pythons == ["python=3.11"], f"{path.name}: python pin {pythons}"


def test_every_conda_directive_names_an_existing_env():
    rules = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "workflow" / "rules").glob("*.smk"))
    named = set(re.findall(r'ENVS / "([^"]+)"', rules))
    assert named, "no conda: directives found"
    assert named <= {p.name for p in ENVS}, f"conda: directives name missing envs: {named - {p.name for p in ENVS}}"
