"""Shared fixtures: tests/ on sys.path (for `fakes`), tiny random models, the embedded model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
