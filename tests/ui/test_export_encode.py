"""`lens_widget.widget.export` without a browser: state encoding, safe inline JSON, the missing-bundle error."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from fakes import make_result

from lens_widget.widget import export
from lens_widget.wire import json_state as encode_state
from lens_widget.widget.export import script_json as _script_json, standalone_html
from lens_widget.wire import result_to_wire


def test_bytes_become_base64_with_dtype_and_shape():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    state = {
        "data": {"x": {"dtype": "float32", "shape": [2, 3], "buffer": memoryview(a.tobytes())}, "n": [1, {"b": b"\x01\x02"}]},
        "arr": np.array([1, 2], dtype=np.int64),
        "f": float("nan"),
        "i": np.int64(3),
    }
    out = encode_state(state)
    x = out["data"]["x"]
    assert set(x) == {"dtype", "shape", "b64"}
    assert np.frombuffer(base64.b64decode(x["b64"]), "<f4").tolist() == a.ravel().tolist()
    assert out["data"]["n"][1]["b"] == {"dtype": "uint8", "shape": [2], "b64": "AQI="}
    assert out["arr"]["dtype"] == "int32" and np.frombuffer(base64.b64decode(out["arr"]["b64"]), "<i4").tolist() == [1, 2]
    assert out["f"] is None and out["i"] == 3
    json.dumps(out, allow_nan=False)
    with pytest.raises(TypeError):
        encode_state({"bad": object()})


def test_wire_round_trip_of_a_result():
    r = make_result(hostile=True)
    out = encode_state({"data": result_to_wire(r)})["data"]
    ids = np.frombuffer(base64.b64decode(out["topk_ids"]["b64"]), "<i4").reshape(out["topk_ids"]["shape"])
    assert (ids == r.topk_ids[0]).all()
    assert out["vocab_strings"][:2] == [r.token_strings[0], r.token_strings[1]]


def test_script_json_cannot_break_out():
    text = _script_json({"s": "</script><script>alert(1)</script><!-- \u2028 & >"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["s"] == "</script><script>alert(1)</script><!-- \u2028 & >"


def test_page_is_offline_and_title_escaped(monkeypatch, tmp_path):
    bundle = tmp_path / "widget.js"
    bundle.write_text("export default { render() {} }; // </script> inside the bundle")
    monkeypatch.setattr(export, "BUNDLE_PATH", bundle)
    html = standalone_html({"prompt": "</script>"}, title='"><script>x</script>')
    assert "<title>&quot;&gt;&lt;script&gt;x&lt;/script&gt;</title>" in html
    assert len(re.findall(r"</script", html, re.I)) == 3
    assert not re.search(r"""(src|href)=["']?https?://""", html)


def test_missing_bundle_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setattr(export, "BUNDLE_PATH", tmp_path / "nope.js")
    with pytest.raises(RuntimeError, match="npm run build"):
        export.bundle_source()
