"""Reading checkpoints: PyTorch .pth, .safetensors (numpy only, no torch), MindSpore .ckpt.

Each reader returns a flat {name: array-like} plus what it found (format, container, file hash).
Containers ({'model': ...}, {'state_dict': ...}, {'model_ema': ...}) are opened here.
"""
import dataclasses
import hashlib
import json
import os
import struct

from ..errors import ConversionError, first_line

EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
MAIN_KEYS = ("state_dict", "model")


@dataclasses.dataclass
class Source:
    path: str
    state_dict: dict
    format: str            # 'pth' | 'safetensors' | 'ckpt'
    container: str = ""    # key the weights came from, '' for a flat file
    sha256: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)   # safetensors header metadata, if any


def sha256_of(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path):
    """'safetensors', 'pth' or 'ckpt', from the file's first bytes (the extension can lie)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise ConversionError(f"cannot read {path}: the file is empty or truncated ({len(head)} bytes)")
    # safetensors first: its 8-byte header length can itself begin with b"\x80" or b"PK" (e.g. timm's
    # coat_lite_tiny written by safetensors.torch.save_model: 0x4b80), while a zip or pickle file
    # essentially never has a small length there followed by "{".
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 0 < header_len <= os.path.getsize(path) - 8:
        return "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip (torch >= 1.6) or legacy pickle
        return "pth"
    if path.endswith(".safetensors"):
        return "safetensors"
    if path.endswith((".pth", ".pt", ".bin", ".tar")):  # let torch say why it cannot read it
        return "pth"
    return "ckpt"


def _check_file(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConversionError(f"source checkpoint not found: {path}")
    if not os.path.isfile(path):
        raise ConversionError(f"source is not a file: {path}")
    return path


def read_safetensors(path):
    """{name: numpy array} and header metadata, without importing torch."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        arrays = load_file(path)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(n)).get("__metadata__") or {}
    except (SafetensorError, ValueError, OSError, struct.error) as exc:
        raise ConversionError(f"cannot read {path}: truncated or not a valid .safetensors file "
                              f"({first_line(exc)})") from None
    except TypeError as exc:  # e.g. bfloat16, which numpy cannot hold
        raise ConversionError(f"cannot read {path} with numpy ({exc}); convert it to float32 first") from None
    return arrays, meta


class PickledObjectsError(ConversionError):
    """A .pth file holding Python objects besides tensors (torch.load refuses it with weights_only)."""

    def __init__(self, path, detail):
        self.path, self.detail = path, detail
        super().__init__(f"{path} holds Python objects besides tensors; if you trust the file, pass --trust-pickle "
                         f"({detail[:200]})")


def read_pth(path, trust_pickle=False):
    """torch.load on CPU; weights_only unless the user trusts the file."""
    try:
        import torch
    except ImportError:
        raise ConversionError("reading a .pth file needs PyTorch: install it with 'pip install torch' "
                              "(the CPU build is enough), or convert a .safetensors file instead") from None
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":
        raise ConversionError(f"cannot read {path}: not a PyTorch checkpoint (neither a zip nor a pickle file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, BadZipFile...
        text = first_line(exc)
        if "weights_only" in str(exc) and not trust_pickle:
            raise PickledObjectsError(path, text) from None
        raise ConversionError(f"cannot read {path}: truncated or not a PyTorch checkpoint ({text[:200]})") from None


def read_ckpt(path):
    """A MindSpore .ckpt as {name: numpy array}."""
    from ..checkpoint import read_checkpoint
    return {name: param.asnumpy() for name, param in read_checkpoint(path).items()}


def _is_tensor_dict(obj):
    return isinstance(obj, dict) and obj and all(hasattr(v, "shape") for v in obj.values())


def unwrap(obj, path, ema=False):
    """Pick the state dict out of a checkpoint container; returns (state_dict, container key)."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    if ema:
        for key in EMA_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return dict(obj[key]), key
        raise ConversionError(f"--ema given but {path} has no EMA weights (top-level keys: "
                              f"{', '.join(map(str, list(obj)[:8]))})")
    if _is_tensor_dict(obj):
        return dict(obj), ""
    for key in MAIN_KEYS:
        if _is_tensor_dict(obj.get(key)):
            return dict(obj[key]), key
    found = ", ".join(map(str, list(obj)[:8])) or "none"
    raise ConversionError(f"{path} holds no state dict (expected tensors, or one under 'state_dict', 'model' or "
                          f"'model_ema'; top-level keys: {found})")


def read_source(path, ema=False, trust_pickle=False):
    """Read any supported source checkpoint into a Source."""
    path = _check_file(path)
    fmt = detect_format(path)
    meta = {}
    if fmt == "safetensors":
        obj, meta = read_safetensors(path)
    elif fmt == "pth":
        obj = read_pth(path, trust_pickle)
    else:
        obj = read_ckpt(path)
    state_dict, container = unwrap(obj, path, ema=ema) if fmt == "pth" else (obj, "")
    if ema and fmt != "pth":
        raise ConversionError(f"--ema applies to PyTorch checkpoint containers; {path} is a {fmt} file")
    return Source(path, state_dict, fmt, container, sha256_of(path), meta)


def read_mindspore(path):
    """A MindSpore .ckpt or safetensors file -> {name: numpy array}."""
    path = _check_file(path)
    if detect_format(path) == "safetensors":
        return read_safetensors(path)[0]
    return read_ckpt(path)
