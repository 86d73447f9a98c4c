"""Writing converted weights, atomically: MindSpore .ckpt / safetensors, PyTorch .pth / safetensors.

Every file is written to a temporary name in the destination folder and moved into place with
os.replace, so an interrupted or failed run never leaves a half-written output.  Conversion
metadata (source hash, variant, converter version) goes to a JSON sidecar ``<out>.json``, which
keeps the .ckpt itself a plain weights file that coat_ms.checkpoint.read_checkpoint loads cleanly;
safetensors outputs also carry it in their header metadata.
"""
import contextlib
import json
import os
import tempfile

import numpy as np

from .errors import ConversionError


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


@contextlib.contextmanager
def atomic_path(out, suffix):
    """Yield a temporary path next to ``out``; on success move it to ``out``, else remove it."""
    out = check_writable(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=f".tmp{suffix}",
                               dir=os.path.dirname(os.path.abspath(out)))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, out)
    except ConversionError:
        raise
    except Exception as exc:  # disk full, permissions, MindSpore/safetensors writer errors
        text = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"cannot write {out}: {text}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _str_metadata(metadata):
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def write_json(out, data):
    with atomic_path(out, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")


def write_mindspore(params, out, fmt="ckpt", metadata=None):
    """Save {name: float32 array} as a MindSpore checkpoint (+ ``<out>.json`` metadata)."""
    import mindspore as ms
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        with atomic_path(out, ".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, tmp,
                      metadata=_str_metadata(metadata or {}))
    else:
        entries = [{"name": name, "data": ms.Tensor(value)} for name, value in params.items()]
        with atomic_path(out, ".ckpt") as tmp:  # save_checkpoint appends .ckpt to other names
            ms.save_checkpoint(entries, tmp)
            os.chmod(tmp, 0o644)  # MindSpore leaves its files read-only
    if metadata is not None:
        write_json(out + ".json", metadata)


def read_mindspore(path):
    """A MindSpore .ckpt or safetensors file -> {name: numpy array}."""
    from .torch_io import detect_format, read_ckpt, read_safetensors
    if not os.path.isfile(path):
        raise ConversionError(f"source checkpoint not found: {path}")
    if detect_format(path) == "safetensors":
        return read_safetensors(path)[0]
    return read_ckpt(path)


def write_torch(state_dict, out, fmt="pth", metadata=None):
    """Save {name: array} for PyTorch: torch.save (.pth) or safetensors (+ ``<out>.json``)."""
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        with atomic_path(out, ".safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, tmp,
                      metadata=_str_metadata(metadata or {}))
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
        with atomic_path(out, ".pth") as tmp:
            torch.save(tensors, tmp)
    if metadata is not None:
        write_json(out + ".json", metadata)
