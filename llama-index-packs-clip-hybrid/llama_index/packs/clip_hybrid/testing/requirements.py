"""Optional test dependencies: skipped on a developer machine, required on CI."""

from __future__ import annotations

import os


def require(available: bool, what: str) -> None:
    """Skip the calling test when ``what`` is missing, unless ``CI`` is set: CI installs
    every optional part (``.ci/run``), so there a missing one fails the test instead of
    letting the run pass by skipping it."""
    if available:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing on CI; .ci/run and the dev dependencies install it.")
    pytest.skip(f"{what} is not installed")
