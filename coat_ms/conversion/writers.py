"""Writing converted weights: MindSpore .ckpt / safetensors, PyTorch .pth / safetensors.

Every file goes through ``coat_ms.fileio.atomic_write`` (temp file in the destination folder,
fsync, rename), so an interrupted or failed run never leaves a half-written output.  Conversion
metadata (source hash, variant, converter version) goes to a JSON sidecar ``<out>.json``;
safetensors outputs also carry it in their header metadata.  A MindSpore .ckpt also holds the
weights' coat_ms record (model, constructor switches, evaluation preprocessing: coat_ms.origin) as
the one string entry coat_ms.checkpoint reads, so the file describes itself without its sidecar.
"""
import json
import os

import numpy as np

from ..errors import CoatError, ConversionError, first_line
from ..fileio import atomic_write


def check_writable(out):
    """Fail before any work if ``out`` cannot be written."""
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise ConversionError(f"output path is a directory: {out}")
    if not os.path.isdir(folder):
        raise ConversionError(f"cannot write {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConversionError(f"cannot write {out}: folder {folder} is not writable")
    return out


def _write(out, write_fn, suffix):
    """atomic_write, with any writer failure (safetensors, MindSpore, torch) as one line."""
    out = check_writable(out)
    try:
        atomic_write(out, write_fn, suffix=suffix)
    except CoatError:
        raise
    except Exception as exc:  # e.g. an I/O error atomic_write passes on, or a library's own error type
        text = getattr(exc, "strerror", None) or first_line(exc)
        raise ConversionError(f"cannot write {out}: {text}") from None


def _str_metadata(metadata):
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def json_text(data):
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(out, data):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json_text(data))
    _write(out, write, ".json")


def save_ckpt(params, path, record=None):
    """MindSpore's save_checkpoint of {name: array} (and a coat_ms ``record``) to exactly ``path`` (which
    must end in .ckpt)."""
    import mindspore as ms

    from ..checkpoint import meta_entry
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(value)} for name, value in params.items()], path,
                       append_dict=meta_entry(record) if record else None)


def _save_safetensors(arrays, metadata):
    from safetensors.numpy import save_file

    def write(tmp):
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=_str_metadata(metadata or {}))
    return write


def write_mindspore(params, out, fmt="ckpt", metadata=None):
    """Save {name: float32 array} as a MindSpore checkpoint (+ ``<out>.json`` metadata)."""
    if fmt == "safetensors":
        _write(out, _save_safetensors(params, metadata), ".safetensors")
    else:  # save_checkpoint appends .ckpt to other names, hence the temp suffix
        _write(out, lambda tmp: save_ckpt(params, tmp, (metadata or {}).get("record")), ".ckpt")
    if metadata is not None:
        write_json(out + ".json", metadata)


def write_torch(state_dict, out, fmt="pth", metadata=None):
    """Save {name: array} for PyTorch: torch.save (.pth) or safetensors (+ ``<out>.json``)."""
    if fmt == "safetensors":
        _write(out, _save_safetensors(state_dict, metadata), ".safetensors")
    else:
        try:
            import torch
        except ImportError:
            raise ConversionError("writing a .pth needs PyTorch ('pip install torch'); "
                                  "or write --format safetensors") from None
        tensors, shared = {}, {}
        for key, value in state_dict.items():  # tied aliases share one tensor, as in PyTorch
            if id(value) not in shared:
                shared[id(value)] = torch.from_numpy(np.array(value, copy=True))
            tensors[key] = shared[id(value)]
        _write(out, lambda tmp: torch.save(tensors, tmp), ".pth")
    if metadata is not None:
        write_json(out + ".json", metadata)
