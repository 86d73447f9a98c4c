"""Mixed precision: which amp level runs where, and how it is applied to a CoaT model.

Levels are mindcv's (train.py applies them with ``mindcv.utils.amp.auto_mixed_precision``, as mindcv's
own trainer does): O0 float32; O1 the white list (``nn.Dense``) in float16; O2 everything in float16
but the black list (``nn.LayerNorm``, batch norms); O3 everything in float16.  "auto" means O2.

What stays in float32 under every level, whatever the lists say (the precision choices of the model,
coat_ms/models): LayerNorm statistics (and MindSpore's CPU LayerNorm has no float16 kernel), the
softmax of the keys over the tokens (a sum over up to 3,137 tokens), the loss (logits and soft labels
are cast to float32 before it, as mindcv does at O2/O3), and the weights themselves (float32
Parameters, cast where they are used, so the optimizer updates float32 masters).  Constants (resize
matrices, CLS tokens, zero rows) are cast to the activation's dtype where they meet it.

Mixed precision runs on MindSpore's own operators: the ``cpu_kernels`` backend is float32 only, so a
CPU run at a level other than O0 builds the model on the ``stock`` backend (the operators Ascend and
GPU run).  On CPU the recipes' amp_level is replaced by O0 (float32 with the C++ kernels is faster
there) unless the run asks for the real level: ``--amp_level`` given as a flag, or ``amp_on_cpu: True``.
"""
import logging

from .errors import CoatError

logger = logging.getLogger("coat_ms")

AMP_LEVELS = ("O0", "O1", "O2", "O3", "auto")

# The cell classes an ``amp_cast_list`` may name (mindcv evaluates the list as Python; coat_ms only ever
# hands it a list written from these names).  CoaT's own cells: Linear is an nn.Dense, LayerNorm an nn.LayerNorm.
CAST_LIST_CELLS = ("Dense", "Conv1d", "Conv2d", "Conv3d", "Conv1dTranspose", "Conv2dTranspose", "Conv3dTranspose",
                   "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm")


class AmpError(CoatError):
    """An amp setting that cannot be applied."""


def parse_cast_list(text):
    """mindcv's ``amp_cast_list`` ("[nn.Dense, nn.LayerNorm]", brackets and ``nn.`` optional) -> the same list
    written from ``CAST_LIST_CELLS`` ("[nn.Dense, nn.LayerNorm]"), or ValueError naming what is allowed."""
    if text is None:
        return None
    names = [n.strip() for n in str(text).strip().strip("[]()").split(",") if n.strip()]
    cells = []
    for name in names:
        bare = name[3:] if name.startswith("nn.") else name
        if bare not in CAST_LIST_CELLS:
            raise ValueError(f"a list of MindSpore cells from {', '.join('nn.' + c for c in CAST_LIST_CELLS)}; "
                             f"{name!r} is not one of them")
        cells.append("nn." + bare)
    if not cells:
        raise ValueError("a non-empty list of MindSpore cells, e.g. [nn.Dense]")
    return "[" + ", ".join(cells) + "]"


def level_that_runs(level, device, *, explicit=False, on_cpu=False, what="amp_level"):
    """The amp level a run uses on ``device``: "auto" is O2; on CPU, O0 unless ``explicit`` (a flag gave the
    level) or ``on_cpu`` (amp_on_cpu: True).  Says what it chose when it differs from ``level``."""
    level = "O2" if level == "auto" else level
    if device == "CPU" and level != "O0" and not (explicit or on_cpu):
        logger.info("amp: %s %s -> O0 on CPU (float32 with the C++ kernels; --amp_on_cpu runs %s on MindSpore's "
                    "float16 CPU kernels, as the device would)", what, level, level)
        return "O0"
    return level


def backend_for(level):
    """The model backend a level needs: MindSpore's operators for any float16 level, else the default."""
    return "auto" if level == "O0" else "stock"


def apply_amp(model, level, cast_list=None):
    """``model`` with mindcv's ``auto_mixed_precision(model, level, cast_list)`` applied in place (O0: unchanged).

    ``cast_list`` must come from ``parse_cast_list`` (a list written from fixed names, never user text).
    """
    if level == "O0":
        return model
    if level not in ("O1", "O2", "O3"):
        raise AmpError(f"amp level {level!r} cannot be applied; use O0, O1, O2 or O3")
    if getattr(model, "backend", None) is not None and model.backend.kernels:
        raise AmpError(f"amp level {level} needs MindSpore's operators: build the model with backend='stock' "
                       f"(it runs on {model.backend}, whose C++ kernels are float32 only)")
    from mindcv.utils.amp import auto_mixed_precision
    auto_mixed_precision(model, amp_level=level, amp_cast_list=cast_list)
    return model
