"""Which parameters get weight decay: mindcv's ``weight_decay_filter`` values, for coat_ms's parameter names.

mindcv chooses by name ("beta", "gamma" or "bias" in it), which fits MindSpore's own cells; coat_ms keeps
PyTorch names (a LayerNorm weight is ``...norm1.weight``), so the names would spare only the biases.  The
values keep their meaning here, decided by what a parameter is rather than by its name:

  disable        every parameter is decayed.
  auto           what MindSpore's optimizer spares when it is given no groups: the parameters of
                 normalisation layers (MindSpore's are called gamma / beta).
  norm_and_bias  the official CoaT and timm recipe (``filter_bias_and_bn: True``): no decay for any 1-D
                 parameter (biases, LayerNorm weights) nor for ``model.no_weight_decay()`` (the cls tokens).
"""
import logging

from mindspore import nn

from ..models.layers import LayerNorm

NORM_CELLS = (LayerNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)


def exempt_from_decay(model, weight_decay_filter):
    """{parameter name: why it is not decayed} for the model's trainable parameters under the filter."""
    params = model.trainable_params()
    if weight_decay_filter == "disable":
        return {}
    if weight_decay_filter == "auto":
        norm_ids = {id(p) for _, cell in model.cells_and_names() if isinstance(cell, NORM_CELLS)
                    for p in cell.get_parameters()}
        return {p.name: "of norm layers" for p in params
                if id(p) in norm_ids or "beta" in p.name or "gamma" in p.name}
    if weight_decay_filter == "norm_and_bias":
        listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
        return {p.name: ("1-D (biases, norm weights)" if len(p.shape) <= 1 else "in model.no_weight_decay()")
                for p in params if len(p.shape) <= 1 or p.name in listed}
    raise ValueError(f"weight_decay_filter must be disable, auto or norm_and_bias, got {weight_decay_filter!r}")


def weight_decay_groups(model, weight_decay, weight_decay_filter):
    """Parameter groups for a MindSpore optimizer: (groups, one-line description of them).

    Groups: the decayed parameters with ``weight_decay``, the others with 0, then ``order_params`` (the
    model's order, which optimizer states and checkpoints follow).  Empty groups are left out.
    """
    params = model.trainable_params()
    exempt = exempt_from_decay(model, weight_decay_filter)
    decay = [p for p in params if p.name not in exempt]
    keep = [p for p in params if p.name in exempt]
    groups = [{"params": g, "weight_decay": wd} for g, wd in ((decay, weight_decay), (keep, 0.0)) if g]
    groups.append({"order_params": params})
    why = {}
    for reason in exempt.values():
        why[reason] = why.get(reason, 0) + 1
    values = sum(int(p.size) for p in decay)
    text = (f"weight decay {weight_decay:g} on {len(decay)} of {len(params)} parameter tensors ({values:,} values), "
            f"none on {len(keep)}" + (f" ({', '.join(f'{n} {r}' for r, n in sorted(why.items()))})" if why else "") +
            f" [weight_decay_filter {weight_decay_filter}]")
    return groups, text


def create_grouped_optimizer(groups, **kwargs):
    """mindcv's ``create_optimizer`` on ready-made groups (each carries its weight decay).

    Its "auto" filter is the one that passes groups through untouched ("disable" and "norm_and_bias"
    regroup the parameters by name); its warning that MindSpore then filters norm layers by name does
    not apply to groups, so it is left out of the log.
    """
    from mindcv.optim import create_optimizer

    mindcv_log = logging.getLogger("mindcv.optim.optim_factory")
    quiet = _DropAutoFilterWarning()
    mindcv_log.addFilter(quiet)
    try:
        return create_optimizer(groups, weight_decay_filter="auto", **kwargs)
    finally:
        mindcv_log.removeFilter(quiet)


class _DropAutoFilterWarning(logging.Filter):
    def filter(self, record):
        return "AUTO weight decay filter" not in record.getMessage()
