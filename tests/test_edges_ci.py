"""conftest's reporting: CI fails without its browser; skipped real-photo tests are named.

Each case runs pytest in a fresh process on two tiny test files that use conftest's
fixture and hook as the real suite does, with the browser moved out of reach.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "conftest.py": "from tests.conftest import needs_browser, pytest_terminal_summary  # noqa\n",
    "test_in_browser.py": """
        import pytest
        from tests import browser_helpers

        browser_helpers.CHROMIUM = "/nonexistent/chromium"  # a machine without it
        pytestmark = pytest.mark.usefixtures("needs_browser")


        def test_in_the_browser():
            pass
    """,
    "test_photos.py": """
        import pytest


        @pytest.mark.skipif(True, reason="needs ../shared/data/dogs.csv")
        def test_on_the_real_photos():
            pass


        def test_on_generated_images():
            pass
    """,
}


def run_pytest(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    for name, text in FILES.items():
        (folder / name).write_text(textwrap.dedent(text))
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_in_ci_a_missing_browser_fails_the_run_with_the_reason(tmp_path):
    result = run_pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "CI=true, but the browser tests cannot run: no chromium at /nonexistent/chromium" in (
        result.stdout
    )
    assert "1 passed, 1 skipped, 1 error" in result.stdout


@pytest.mark.parametrize("ci", [None, "false"], ids=["no-CI", "CI=false"])
def test_elsewhere_a_missing_browser_skips_saying_so(tmp_path, ci):
    result = run_pytest(tmp_path, ci)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "browser tests skipped on this machine: no chromium at /nonexistent/chromium" in (
        result.stdout
    )
    assert "1 passed, 2 skipped" in result.stdout


def test_the_summary_names_the_skipped_real_photo_tests_and_why(tmp_path):
    out = run_pytest(tmp_path, None).stdout
    assert "real-photo tests skipped" in out, f"no such section in the summary:\n{out[-2000:]}"
    section = out[out.index("real-photo tests skipped") :]
    assert "1 test(s) of the real dog photos did not run: ../shared/data absent" in section
    assert "test_photos.py::test_on_the_real_photos: needs ../shared/data/dogs.csv" in section
    assert "test_in_the_browser" not in section.split("short test summary")[0]
