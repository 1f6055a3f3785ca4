"""JS and Python show a token the same way: both run the one table js/tests/fixtures/display_cases.json
(``[[input, expected_display], ...]``; the front end's vitest reads the same file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lens_widget.tokens import display_token

CASES_PATH = Path(__file__).resolve().parent.parent / "js" / "tests" / "fixtures" / "display_cases.json"


def load_cases() -> list[list[str]]:
    cases = json.loads(CASES_PATH.read_text(encoding="utf-8"))  # missing file: an error, not a skip
    assert isinstance(cases, list) and all(isinstance(c, list) and len(c) == 2 and all(isinstance(x, str) for x in c) for c in cases), (
        f"{CASES_PATH}: expected [[input, expected_display], ...]"
    )
    return cases


CASES = load_cases()


def test_the_table_covers_every_kind_of_token():
    inputs = [c[0] for c in CASES]
    assert len(CASES) >= 20 and len(set(inputs)) == len(inputs)
    kinds = {
        "empty": "" in inputs,
        "space/newline/tab": any(ch in s for s in inputs for ch in " \n\t"),
        "byte token": any(s.lower().startswith("<0x") for s in inputs),
        "zero-width / bidi": any(ch in s for s in inputs for ch in "\u200b\u202e\u2066"),
        "control": any(ord(ch) < 0x20 and ch not in "\n\t\r" for s in inputs for ch in s),
        "astral (emoji)": any(ord(ch) > 0xFFFF for s in inputs for ch in s),
        "markup": any("<" in s and not s.lower().startswith("<0x") for s in inputs),
    }
    assert all(kinds.values()), [k for k, v in kinds.items() if not v]


@pytest.mark.parametrize("text, shown", CASES, ids=[ascii(c[0])[1:-1][:40] or "empty" for c in CASES])
def test_python_display_matches_the_shared_table(text, shown):
    assert display_token(text) == shown


def test_python_only_tables_are_in_the_shared_one():
    """The hostile-input test's own table is part of the shared one (no hand-copied drift)."""
    from test_hostile_input import DISPLAY_CASES

    shared = {a: b for a, b in CASES}
    missing = [(a, b) for a, b in DISPLAY_CASES if shared.get(a) != b]
    assert not missing, f"add these to {CASES_PATH.name}: {missing}"
