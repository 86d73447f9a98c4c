"""Name rules between PyTorch CoaT state dicts (timm / official) and coat_ms parameters.

Nothing here lists keys by hand: the rules are read off a built coat_ms model.  Its parameter
names are the canonical PyTorch keys; walking its cell tree *without* de-duplication yields every
path under which a shared (tied) parameter is reachable, which is exactly the set of keys a PyTorch
``state_dict()`` of the same architecture lists.  So a tied group is "all paths of one Parameter",
its first path (what ``parameters_dict()`` uses) is the MindSpore name, the rest are aliases.
"""
import dataclasses
import functools
import re

from ..errors import ConversionError
from ..models import coat as coat_model

# Keys of the official release that no model uses: its unused norm1, and norm2/norm3 of CoaT-Lite.
# Recognised by pattern (a final norm the built model does not have), not by a per-variant list.
FINAL_NORM = re.compile(r"^norm[1-4]\.(weight|bias)$")
# Prefixes wrappers add in front of every key (DistributedDataParallel, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a coat_ms model of one configuration holds, in PyTorch terms."""
    variant: str
    num_classes: int
    in_chans: int
    names: tuple        # MindSpore parameter names, model order
    shapes: dict        # name -> shape tuple
    aliases: dict       # MindSpore name -> tuple of alias keys (empty for untied parameters)
    alias_of: dict      # alias key -> MindSpore name
    torch_keys: tuple   # every key a PyTorch state_dict of this architecture lists, in PyTorch's order

    def canonical(self, key):
        """MindSpore name for a PyTorch key (itself or the name it aliases), else None."""
        if key in self.shapes:
            return key
        return self.alias_of.get(key)


def _parameter_paths(cell, prefix=""):
    """Yield (path, Parameter) for every path to every parameter, shared cells included each time."""
    for pname, param in cell._params.items():  # pylint: disable=protected-access
        if param is not None:
            yield prefix + pname, param
    for cname, child in cell._cells.items():  # pylint: disable=protected-access
        if child is not None:
            yield from _parameter_paths(child, f"{prefix}{cname}.")


@functools.lru_cache(maxsize=16)
def layout(variant, num_classes=1000, in_chans=3):
    """The Layout of ``variant`` (built once per configuration, then cached)."""
    if variant not in coat_model.VARIANTS:
        raise ConversionError(f"unknown model '{variant}'; known: {', '.join(coat_model.VARIANTS)}")
    try:  # only names and shapes are needed: skip the random initialisation (most of the build time)
        from mindspore.nn.utils import no_init_parameters
    except ImportError:  # older MindSpore
        import contextlib
        no_init_parameters = contextlib.nullcontext
    with no_init_parameters():
        model = getattr(coat_model, variant)(num_classes=num_classes, in_chans=in_chans)
    return layout_of(model, variant)


def layout_of(model, variant=""):
    """The Layout of a built coat_ms model (any architecture, e.g. a narrow test build)."""
    num_classes, in_chans = model.num_classes, model.in_chans
    params = model.parameters_dict()
    names = tuple(params)
    paths, order = {}, []
    for path, param in _parameter_paths(model):  # same walk order as torch's state_dict()
        paths.setdefault(id(param), []).append(path)
        order.append(path)
    aliases, alias_of = {}, {}
    by_id = {id(p): n for n, p in params.items()}
    for pid, group in paths.items():
        name = by_id[pid]
        others = tuple(p for p in group if p != name)
        aliases[name] = others
        for other in others:
            alias_of[other] = name
    shapes = {n: tuple(int(d) for d in p.shape) for n, p in params.items()}
    return Layout(variant, num_classes, in_chans, names, shapes, aliases, alias_of, tuple(order))


def architecture_of(shapes):
    """Read the architecture (embed dims, depths, mlp ratios) from {key: shape}; None if not CoaT."""
    if not all(f"patch_embed{i}.proj.weight" in shapes for i in range(1, 5)):
        return None
    dims = tuple(int(shapes[f"patch_embed{i}.proj.weight"][0]) for i in range(1, 5))
    depths = []
    for i in range(1, 5):
        pattern = re.compile(rf"^serial_blocks{i}\.(\d+)\.")
        found = [int(m.group(1)) for k in shapes for m in [pattern.match(k)] if m]
        depths.append(max(found) + 1 if found else 0)
    parallel = [int(m.group(1)) for k in shapes for m in [re.match(r"^parallel_blocks\.(\d+)\.", k)] if m]
    ratios = []
    for i in range(1, 5):
        fc1 = shapes.get(f"serial_blocks{i}.0.mlp.fc1.weight")
        ratios.append(int(fc1[0]) // dims[i - 1] if fc1 is not None and dims[i - 1] else None)
    return dict(embed_dims=dims, serial_depths=tuple(depths),
                parallel_depth=max(parallel) + 1 if parallel else 0, mlp_ratios=tuple(ratios))


def match_variant(arch):
    """The registered variant with exactly this architecture, else None."""
    for name, cfg in coat_model.VARIANTS.items():
        if (tuple(cfg["embed_dims"]) == arch["embed_dims"] and tuple(cfg["serial_depths"]) == arch["serial_depths"]
                and cfg["parallel_depth"] == arch["parallel_depth"]
                and tuple(cfg["mlp_ratios"]) == arch["mlp_ratios"]):
            return name
    return None


def head_config(shapes):
    """(num_classes, in_chans) read from the head and first patch embedding (0 classes: no head)."""
    head = shapes.get("head.weight")
    first = shapes.get("patch_embed1.proj.weight")
    return (int(head[0]) if head is not None else 0), (int(first[1]) if first is not None else 3)
