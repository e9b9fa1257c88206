"""Apps import downward only: the import-linter contract in pyproject.toml ([tool.importlinter]),
run as `lint-imports` would be, plus proof that the check sees real upward imports."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def _lint(*args: str) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS, "lint-imports is installed with the test extra (pyproject.toml)"
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_apps_import_downward_only():
    result = _lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Apps import downward only KEPT" in result.stdout


@pytest.mark.parametrize(
    ("upper", "lower", "edge"),
    [
        # requests_app files requests against allocator's pools: a contract that claimed
        # allocator sits above requests_app must break on that edge.
        ("allocator", "requests_app", "requests_app.models -> allocator.models"),
        # the front app's overview reads requests_app: putting requests_app on top must break.
        ("requests_app", "front", "front.views -> requests_app"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, upper, lower, edge):
    # given a contract that puts `upper` above `lower`, the reverse of what the code does
    config = tmp_path / "contract.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tool.importlinter]
            root_packages = ["{upper}", "{lower}"]

            [[tool.importlinter.contracts]]
            name = "reversed for the test"
            type = "layers"
            layers = ["{upper}", "{lower}"]
            """
        )
    )
    # when it is checked
    result = _lint(str(config))
    # then it is reported broken, naming the import that goes up
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reversed for the test BROKEN" in result.stdout
    assert edge in result.stdout
