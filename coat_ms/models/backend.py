"""Which operator set a CoaT model computes with: chosen once when the model is built, kept as ``model.backend``.

All three compute the same function (the parity suite and tests/test_kernels.py hold them to it):

    cpu_kernels  coat_ms's C++ kernels (coat_ms/kernels) where they help, MindSpore's operators elsewhere,
                 and the parallel blocks' resizes as two small token matmuls. CPU target only.
    stock        MindSpore's own operators only: Ascend, GPU, CPU with the kernels switched off, and
                 MINDIR / AIR export (a custom AOT operator points at a local .so).

(ONNX files are written from the model's weights by coat_ms/onnx_writer.py, on no MindSpore operator set.)

``resolve_backend`` makes the choice, from the ``backend`` argument of ``CoaT`` / ``create_model``:
"auto" (the default) is cpu_kernels on the CPU target and stock elsewhere. The environment switch,
read here and nowhere else:

    COAT_MS_CPU_KERNELS=0                        "auto" means stock on CPU too
    COAT_MS_CPU_KERNELS_OFF=attention,gelu       cpu_kernels without the named kernels (dwconv, rowops,
                                                 gelu, attention, crossscale), to measure what each brings

Layers take the Backend in their constructors and ask it once for their operator (``backend.op``);
nothing else looks at the device or the environment. A model moves to another operator set with
``CoaT.with_backend`` (a twin model holding a copy of the weights), which is how export gets stock operators.
"""
import dataclasses
import os

from ..errors import CoatError
from ..kernels import KERNEL_NAMES, attention, crossscale, dwconv, gelu, load_kernel, rowops

SWITCH = "COAT_MS_CPU_KERNELS"
SWITCH_OFF = "COAT_MS_CPU_KERNELS_OFF"
BACKEND_NAMES = ("cpu_kernels", "stock")

# operator -> the kernels it needs (the attention kernel takes crpe's convolution in the token layout
# that only the dwconv kernel produces; the bias-fused GELU's bias gradient is the rowops column sum)
_OP_NEEDS = {"layer_norm": ("rowops",), "layer_norm_ones": ("rowops",), "bias_add": ("rowops",),
             "residual_bias_add": ("rowops",), "gelu": ("gelu",), "bias_gelu": ("gelu", "rowops"),
             "dwconv": ("dwconv",), "attention": ("attention", "dwconv"), "cross_scale_sum": ("crossscale",)}

_OP_GETTERS = {"layer_norm": rowops.layer_norm_op, "layer_norm_ones": rowops.layer_norm_ones_op,
               "bias_add": rowops.bias_add_op, "residual_bias_add": rowops.residual_bias_add_op,
               "gelu": gelu.gelu_op, "bias_gelu": gelu.bias_gelu_op, "dwconv": dwconv.dwconv_op,
               "attention": attention.factor_attention_op, "cross_scale_sum": crossscale.cross_scale_sum_op}

# how the parallel blocks resize token grids on each operator set
_TOKEN_RESIZE = {"cpu_kernels": "separable", "stock": "interpolate"}


class BackendError(CoatError):
    """An operator set that does not exist or cannot run here, or a malformed kernel switch."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """One operator set: ``name`` (cpu_kernels, stock) and, for cpu_kernels, the kernels in use."""

    name: str
    kernels: frozenset = frozenset()

    def __post_init__(self):
        if self.name not in BACKEND_NAMES:
            raise BackendError(f"unknown backend '{self.name}'; choose auto, {', '.join(BACKEND_NAMES)}")
        unknown = set(self.kernels) - set(KERNEL_NAMES)
        if unknown or (self.kernels and self.name != "cpu_kernels"):
            raise BackendError(f"backend {self.name} cannot hold kernels {sorted(self.kernels)}; "
                               f"only cpu_kernels holds kernels, from {', '.join(KERNEL_NAMES)}")
        object.__setattr__(self, "kernels", frozenset(self.kernels))

    def op(self, name):
        """The C++ primitive for operator ``name`` (see ``_OP_NEEDS``), or None: use MindSpore's operators."""
        if not all(kernel in self.kernels for kernel in _OP_NEEDS[name]):
            return None
        return _OP_GETTERS[name]()

    @property
    def fuses_blocks(self):
        """Whether blocks run their fused form (coat.py ``_runs_fused``): it needs every kernel."""
        return all(kernel in self.kernels for kernel in KERNEL_NAMES)

    @property
    def token_resize(self):
        """How parallel blocks resize token grids: "separable" matmuls or "interpolate"."""
        return _TOKEN_RESIZE[self.name]

    def __str__(self):
        return f"{self.name} ({', '.join(sorted(self.kernels))})" if self.kernels else self.name


STOCK = Backend("stock")


def cpu_kernels_switched_on():
    """False when ``COAT_MS_CPU_KERNELS`` asks for MindSpore's stock operators on CPU too."""
    value = os.environ.get(SWITCH, "1").strip().lower()
    if value not in ("0", "1", "", "false", "true", "off", "on", "no", "yes"):
        raise BackendError(f"{SWITCH}={os.environ[SWITCH]!r}: use 0 (stock operators) or 1 (C++ kernels on CPU)")
    return value not in ("0", "false", "off", "no")


def kernels_requested():
    """The kernels cpu_kernels uses: all of ``KERNEL_NAMES`` but those ``COAT_MS_CPU_KERNELS_OFF`` names."""
    off = [n for n in os.environ.get(SWITCH_OFF, "").replace(" ", "").split(",") if n]
    unknown = [n for n in off if n not in KERNEL_NAMES]
    if unknown:
        raise BackendError(f"{SWITCH_OFF} names unknown kernel(s) {', '.join(unknown)}; "
                           f"known: {', '.join(KERNEL_NAMES)}")
    return tuple(n for n in KERNEL_NAMES if n not in off)


def resolve_backend(backend="auto", device_target=None):
    """The Backend a model is built with, from ``backend`` ("auto", a name, or a Backend) and the device target.

    cpu_kernels builds and self-checks the requested kernels here (once per process); one that fails is
    left out with a warning, and without any kernel the model runs on stock operators.
    """
    import mindspore as ms

    device = device_target or ms.get_context("device_target")
    if isinstance(backend, Backend):
        name = backend.name
    elif backend in (None, "auto"):
        name = "cpu_kernels" if device == "CPU" and cpu_kernels_switched_on() else "stock"
    elif isinstance(backend, str) and backend in BACKEND_NAMES:
        name = backend
    else:
        raise BackendError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKEND_NAMES)}")
    if name == "cpu_kernels" and device != "CPU":
        raise BackendError(f"the cpu_kernels backend runs on the CPU target only (this is {device}); use 'stock'")
    if name != "cpu_kernels":
        return Backend(name)
    wanted = backend.kernels if isinstance(backend, Backend) else kernels_requested()
    loaded = {kernel for kernel in wanted if load_kernel(kernel) is not None}
    if "dwconv" not in loaded:
        loaded.discard("attention")  # it consumes the dwconv kernel's output (see _OP_NEEDS)
    return Backend("cpu_kernels", frozenset(loaded)) if loaded else STOCK
