"""Shared fixtures: tests/ on sys.path (for `fakes`), tiny random models, the embedded model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M (real weights), loaded once per test session."""
    from lens_widget import HookedModel

    return HookedModel.default()
