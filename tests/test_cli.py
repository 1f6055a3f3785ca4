"""The command line: the demo's table, `render`, --help, and clear failures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lens_widget.cli import main

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lens_widget", *args], capture_output=True, text=True, timeout=600)


def test_help_documents_both_commands():
    out = run_cli("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "render" in out.stdout
    render = run_cli("render", "--help")
    for flag in ("--model", "--gguf-file", "--out", "--k", "--track", "--answer"):
        assert flag in render.stdout


def test_demo_prints_the_layer_table_and_writes_html(tmp_path, capsys):
    out = tmp_path / "demo.html"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["layer", "top-1"])
    rows = lines[header + 1 : header + 32]
    assert len(rows) == 31 and rows[0].split()[0] == "emb" and rows[-1].split()[0] == "29"
    last = rows[-1].split()
    assert last[1] == "␣Paris" and float(last[2]) == pytest.approx(0.77, abs=0.02) and last[3] == "1"
    assert out.stat().st_size > 10_000 and "lens-widget" in out.read_text()


def test_demo_shows_the_logit_tuned_and_j_lenses_side_by_side(capsys):
    """The three shipped lenses' columns, each equal to its own independent run (the tuned lens
    alone through ``LogitLens(model, decoder=TunedLens.default(model))``, the J lens likewise), and
    the line saying where each lens first reads the answer."""
    from lens_widget import HookedModel, JacobianLens, LogitLens
    from lens_widget.cli import DEMO_PROMPT
    from lens_widget.tuned_lens import TunedLens

    assert main(["demo", "--no-html"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["layer", "top-1"])
    assert [part.strip() for part in lines[header - 1].split("|")] == ["logit lens", "tuned lens", "J lens"]
    rows = [ln.split(" | ") for ln in lines[header + 1 : header + 32]]
    model = HookedModel.default()
    paris = model.tokens.token_id(" Paris")
    for label, decoder, side in (("logit", None, 0), ("tuned", TunedLens.default(model), 1), ("J", JacobianLens.default(model), 2)):
        r = (LogitLens(model) if decoder is None else LogitLens(model, decoder=decoder)).run(DEMO_PROMPT, track=[paris], progress=False)
        col = r.position_index(-1)
        for s, row in enumerate(rows):
            fields = row[side].split()
            if side == 0:
                fields = fields[1:]  # the layer label
            top, p, rank = fields[0], float(fields[1]), int(fields[2])
            d = r.display(r.topk_ids[0, s, col, 0])
            assert top == (d if len(d) <= 16 else d[:15] + "…"), (label, s)
            assert p == pytest.approx(float(r.topk_probs[0, s, col, 0]), abs=1e-3), (label, s)
            assert rank == int(r.tracked_rank[0, s, col, 0]), (label, s)
        first = r.first_layer(paris)
        assert f"{label} lens: {r.site_labels[first]}" in lines[-1], lines[-1]
    # the researcher's point: the tuned lens reads " Paris" earlier than the logit lens
    assert lines[-1].startswith("␣Paris is top-1 from layer")


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", ""], "empty"),
        (["render", "hi", "--model", "/definitely/not/here"], "could not load"),
        (["demo", "--answer", " Paris city"], "2 tokens"),
        (["demo", "--k", "0"], "--k"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message(args, message, capsys):
    assert main(args + ["--no-html"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_command_is_an_argparse_error():
    out = run_cli("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr
