"""What the wheel and the checkout promise beyond the code: type information shipped, the release
notes in step with the version, the lint and type-check settings the hooks and CI use."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    from setuptools.config.pyprojecttoml import read_configuration

    return read_configuration(ROOT / "pyproject.toml")


def test_the_wheel_ships_py_typed() -> None:
    """PEP 561: pipnet_sdk/py.typed is in the package data, so type checkers read the SDK's hints."""
    assert (ROOT / "pipnet_sdk" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["pipnet_sdk"]


def test_changelog_names_this_version_first() -> None:
    """CHANGELOG.md (Keep a Changelog): its newest release is pyproject.toml's version."""
    version = _pyproject()["project"]["version"]
    releases = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)
    assert [r for r in releases if r != "Unreleased"][0] == version


def test_lint_and_type_check_are_configured_for_the_hooks() -> None:
    """ruff and mypy read their settings from pyproject.toml; the pre-commit hooks are local ones
    (the environment's ruff and mypy, no network)."""
    import yaml

    tool = _pyproject()["tool"]
    assert tool["ruff"]["line-length"] == 120 and tool["ruff"]["target-version"] == "py39"
    assert {"E", "F", "W", "I", "B", "UP"} <= set(tool["ruff"]["lint"]["select"])
    assert tool["mypy"]["files"] == ["pipnet_sdk"]
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    assert set(hooks) == {"ruff", "ruff-format", "mypy"} and {h["language"] for h in hooks.values()} == {"system"}
