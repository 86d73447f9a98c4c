"""mindcv 0.3.0 CoaT checkpoints -> PyTorch-named tensors (then converted like any timm state dict).

mindcv names differ from PyTorch's in three ways, each handled by a rule, not a key list:
  * LayerNorms hold ``gamma``/``beta`` (PyTorch: ``weight``/``bias``);
  * attention has separate ``q``/``k``/``v`` Dense layers (PyTorch: one fused ``qkv``, rows q|k|v);
  * ``aggregate`` is a MindSpore Conv1d whose weight is (1, 3, 1, 1) (PyTorch Conv1d: (1, 3, 1)).
Shared cells (cpe, crpe, mlp2=3=4) are saved once, under whichever path MindSpore gave them; those
paths are aliases in the coat_ms layout, so ``torch_to_ms`` maps them back.  mindcv's parallel blocks
also reach the cpes as ``parallel_blocks.J.cpes.K``; that is stage K+1's ``cpe``.
mindcv also computes differently: align_corners=True interpolation and a serial-block residual
added to the block input; build coat_ms with ``align_corners=True, cpe_residual=False`` (model_kwargs()).
"""
import re

import numpy as np

from ..checkpoint import TRAINING_STATE_PREFIXES
from ..errors import ConversionError

QKV = re.compile(r"^(.*\.factoratt_crpe\d?)\.([qkv])\.(weight|bias)$")
CPES = re.compile(r"^parallel_blocks\.\d+\.cpes\.(\d)\.(.*)$")
# Switches that make coat_ms compute what mindcv 0.3.0's CoaT computes: align_corners=True
# interpolation in the parallel blocks, and its serial-block residual added to the block input
# (x + attn(norm1(cpe(x)))) rather than to the cpe output.
MINDCV_MODEL_KWARGS = {"align_corners": True, "cpe_residual": False}


def model_kwargs():
    """Constructor switches that make coat_ms compute what mindcv's CoaT computes."""
    return dict(MINDCV_MODEL_KWARGS)


def is_mindcv(names):
    """True when the names look like mindcv's CoaT (gamma/beta norms or split q/k/v)."""
    return any(n.endswith((".gamma", ".beta")) or QKV.match(n) for n in names)


def torch_key(name):
    """(PyTorch key, part) for a mindcv parameter name.

    ``part`` is 'q', 'k' or 'v' when the mindcv tensor holds those rows of PyTorch's fused qkv, else None.
    The key may be an alias of a tied tensor (e.g. ``serial_blocks1.0.cpe.proj.weight``): a coat_ms
    Layout maps it to the parameter that owns it.
    """
    qkv = QKV.match(name)
    if qkv:
        return f"{qkv.group(1)}.qkv.{qkv.group(3)}", qkv.group(2)
    key = name
    if name.endswith(".gamma"):
        key = name[:-len("gamma")] + "weight"
    elif name.endswith(".beta"):
        key = name[:-len("beta")] + "bias"
    cpes = CPES.match(key)
    if cpes:
        key = f"cpe{int(cpes.group(1)) + 1}.{cpes.group(2)}"
    return key, None


def mindcv_to_torch(params, report):
    """{mindcv name: array} -> {PyTorch name: array}; records renames/merges/drops in ``report``."""
    out, parts = {}, {}
    for name, value in params.items():
        if name.startswith(TRAINING_STATE_PREFIXES):
            report.dropped.append((name, "training state (optimizer / step counter), not a weight"))
            continue
        value = np.asarray(value)
        new, part = torch_key(name)
        if part:
            parts.setdefault(new, {})[part] = (name, value)
            continue
        if new == "aggregate.weight" and value.ndim == 4:
            report.reshaped.append((new, value.shape, value.shape[:3]))
            value = value.reshape(value.shape[:3])
        if new != name:
            report.renamed.append((name, new))
        if new in out:
            if not np.array_equal(out[new], value):
                raise ConversionError(f"mindcv checkpoint has two different tensors for {new}")
            continue
        out[new] = value
    for key, found in parts.items():
        if set(found) != {"q", "k", "v"}:
            lacking = ", ".join(key.replace(".qkv.", f".{x}.") for x in "qkv" if x not in found)
            raise ConversionError(f"mindcv checkpoint lacks {lacking}")
        out[key] = np.concatenate([found[x][1] for x in "qkv"], axis=0)
        report.merged.append((key, tuple(found[x][0] for x in "qkv")))
    return out
