"""Export a CoaT Cell to MINDIR / ONNX / AIR, and trust the file only after checking it.

* MINDIR: written with ``mindspore.export`` from the model on MindSpore's stock operators (a custom C++
  kernel points at a local .so, which neither Ascend nor another machine can run).
* ONNX: written by coat_ms's own writer (coat_ms/onnx_writer.py: opset 17, the GELU and LayerNorm forms
  ONNX Runtime fuses, real dynamic dimensions); MindSpore's ONNX exporter writes neither Erf nor
  LayerNormalization and bakes every shape into the graph. Cells other than CoaT go through
  ``mindspore.onnx.export`` (fixed shape only).
* AIR: only with an Ascend backend; elsewhere a clear error before anything is compiled.
* ``dynamic``: None (the example shape only), "batch" (any batch at H x W) or "shape" (any batch and any
  H, W multiple of 32). MindSpore 2.10 expresses both in MindIR (``Tensor(shape=[None, 3, None, None])``).

Every written file is run in a fresh Python process (MINDIR: ``mindspore.load`` + ``nn.GraphCell``;
ONNX: onnxruntime only, no MindSpore) at one shape, or three for a dynamic file, and compared with the
model on MindSpore's stock operators run op by op (relative difference max |a - b| / max |b|: MINDIR
<= 1e-6, ONNX <= 1e-5). Files are written with ``coat_ms.fileio.atomic_write`` and the check runs on
the temporary file, so a failed or interrupted export never leaves a file behind.
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .errors import CoatError, first_line
from .fileio import atomic_write, atomic_write_text

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
TOLERANCES = {"MINDIR": 1e-6, "ONNX": 1e-5, "AIR": None}
DYNAMIC_MODES = ("batch", "shape")


class ExportError(CoatError):
    """Export refused (bad path, format not available here) or the written file failed its check."""


@dataclasses.dataclass
class ExportResult:
    path: str
    file_format: str
    input_shape: tuple  # -1 where the file's dimension is dynamic
    dynamic: str = None
    checked_shapes: list = dataclasses.field(default_factory=list)
    max_abs_diff: float = None
    rel_diff: float = None  # the worst over checked_shapes
    tolerance: float = None
    verified_by: str = ""
    seconds: float = 0.0

    def summary(self):
        shape = "x".join("?" if d < 0 else str(d) for d in self.input_shape)
        kind = f", dynamic {self.dynamic}" if self.dynamic else ""
        lines = [f"wrote {self.path} ({self.file_format}, input {shape}{kind}, "
                 f"{os.path.getsize(self.path) / 2**20:.1f} MiB, {self.seconds:.1f} s)"]
        if self.rel_diff is not None:
            at = ", ".join("x".join(map(str, s)) for s in self.checked_shapes)
            lines.append(f"verified with {self.verified_by} at {at}: max |diff| {self.max_abs_diff:.3g}, "
                         f"relative {self.rel_diff:.3g} <= {self.tolerance:g}")
        else:
            lines.append(f"not verified: {self.verified_by}")
        return "\n".join(lines)


def relative_diff(actual, expected):
    """(max |a - e|, max |a - e| / max |e|) as Python floats."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ExportError(f"exported model returns shape {actual.shape}, the Cell {expected.shape}")
    abs_diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    return abs_diff, abs_diff / max(float(np.max(np.abs(expected))), 1e-12)


def current_device_target():
    import mindspore as ms
    return ms.get_context("device_target")


def check_format(file_format, device_target=None):
    """Normalise the format name and refuse what this device target cannot write."""
    fmt = str(file_format).upper()
    if fmt not in FORMATS:
        raise ExportError(f"unknown file format '{file_format}'; choose one of {', '.join(FORMATS)}")
    if fmt == "AIR":
        device = device_target or current_device_target()
        if device != "Ascend":
            raise ExportError(f"AIR export needs an Ascend backend (this MindSpore runs on {device}); "
                              f"export MINDIR here and convert it on an Ascend machine, or rerun there with "
                              f"--device_target Ascend")
    return fmt


def check_dynamic(dynamic, fmt):
    """None, "batch" or "shape"; AIR is refused (it could not be checked here)."""
    if dynamic in (None, "", "none"):
        return None
    if dynamic not in DYNAMIC_MODES:
        raise ExportError(f"unknown dynamic mode '{dynamic}'; choose batch (any batch size) or shape "
                          f"(any batch and any H, W multiple of 32)")
    if fmt == "AIR":
        raise ExportError("dynamic AIR export is not supported: AIR files cannot be checked outside Ascend; "
                          "export a dynamic MINDIR instead")
    return dynamic


def output_path(file_name, file_format):
    """``file_name`` with the format's extension (added unless already there)."""
    ext = FORMATS[file_format]
    path = os.path.abspath(os.fspath(file_name))
    return path if path.lower().endswith(ext) else path + ext


def check_writable(path):
    """Fail early (before compiling anything) if ``path`` cannot be created: try a temp file there."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise ExportError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise ExportError(f"cannot write {path}: it is a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".coat_probe.", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def export_backend(file_format):
    """The operator set a model is built on for export: MindSpore's stock operators, for every format
    (MINDIR and AIR hold the stock operators; the ONNX writer reads only the weights and the structure)."""
    del file_format
    return "stock"


def example_input(batch_size, image_size, in_chans=3, seed=0):
    """The random (B, C, H, W) float32 input used for export and for the check."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, in_chans, image_size[0], image_size[1])).astype(np.float32)


def file_shape(shape, dynamic):
    """(B, C, H, W) as the file takes it: -1 for the batch when ``dynamic``, and for H, W too for "shape"."""
    B, C, H, W = shape
    return (-1 if dynamic else B, C) + ((-1, -1) if dynamic == "shape" else (H, W))


def check_shapes(batch_size, image_size, dynamic, stride=32):
    """The (B, H, W) a file is checked at: the export's own, plus two more for a dynamic file.

    batch: batches B, B + 1 and 1 (3 when B is 1); shape: the batch changes too, and H grows by one
    stride in the second, shrinks by one (at least one stride is left) while W grows by two in the third.
    """
    B, (H, W) = int(batch_size), image_size
    other = 1 if B > 1 else B + 2
    if dynamic is None:
        return [(B, H, W)]
    if dynamic == "batch":
        return [(B, H, W), (B + 1, H, W), (other, H, W)]
    return [(B, H, W), (B + 1, H + stride, W), (other, max(stride, H - stride), W + 2 * stride)]


# ----------------------------------------------------------------------------------------------
# Checks in a fresh process
# ----------------------------------------------------------------------------------------------

_WORKER = "from coat_ms.export import _fresh_worker; _fresh_worker()"


def verify_fresh(jobs, timeout=900):
    """Run exported files in one fresh Python process: jobs = [(path, format, input_array)] -> outputs.

    MINDIR files are loaded with ``mindspore.load`` and run through ``nn.GraphCell``; ONNX files with
    onnxruntime alone (the child does not import MindSpore for them). Nothing of this process (graphs,
    parameters) is reused. Each file is loaded once, however many inputs it runs.
    """
    with tempfile.TemporaryDirectory(prefix="coat_verify_") as tmp:
        spec = []
        for i, (path, fmt, array) in enumerate(jobs):
            inp, out = os.path.join(tmp, f"in{i}.npy"), os.path.join(tmp, f"out{i}.npy")
            np.save(inp, array)
            spec.append({"path": os.fspath(path), "format": fmt, "input": inp, "output": out})
        env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
        proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["no output"]
            kinds = " / ".join(sorted({job[1] for job in jobs}))
            raise ExportError(f"the {kinds} file could not be loaded and run in a fresh process: {lines[-1][:300]}")
        return [np.load(item["output"]) for item in spec]


def verify_mindir_fresh(jobs, timeout=900):
    """``verify_fresh`` for MindIR files: jobs = [(mindir_path, input_array)] -> outputs."""
    return verify_fresh([(path, "MINDIR", array) for path, array in jobs], timeout)


def _fresh_worker():
    """Child side of verify_fresh (argv[1]: JSON job list)."""
    loaded = {}
    for job in json.loads(sys.argv[1]):
        x = np.load(job["input"])
        if job["format"] == "ONNX":
            from .onnx_session import open_session, run
            if job["path"] not in loaded:
                loaded[job["path"]] = open_session(job["path"])
            out = run(loaded[job["path"]], x)
        else:
            import mindspore as ms
            from mindspore import nn
            ms.set_context(mode=ms.GRAPH_MODE)
            if job["path"] not in loaded:
                loaded[job["path"]] = nn.GraphCell(ms.load(job["path"]))
            out = loaded[job["path"]](ms.Tensor(x)).asnumpy()
        np.save(job["output"], out)
    sys.stdout.flush()
    os._exit(0)  # skip MindSpore's noisy interpreter teardown


def run_onnx(path, array):
    """Run an ONNX file with onnxruntime (in this process) on one input; returns the first output."""
    from .onnx_session import open_session, run
    return run(open_session(path), array)


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------

def _fresh_cell_class():
    from mindspore import nn

    class Fresh(nn.Cell):
        def __init__(self, net):
            super().__init__(auto_prefix=False)  # keep the parameter names of ``net``
            self.net = net

        def construct(self, x):
            return self.net(x)
    return Fresh


def _Fresh(net):
    return _fresh_cell_class()(net)


def _export_signature(shape, dynamic):
    """What ``mindspore.export`` compiles for: the example shape, None where the file is to be dynamic."""
    import mindspore as ms

    B, C, H, W = shape
    if dynamic is None:
        return ms.Tensor(example_input(B, (H, W), C))
    dims = [None, C, H, W] if dynamic == "batch" else [None, C, None, None]
    return ms.Tensor(shape=dims, dtype=ms.float32)


def _write(model, shape, path, fmt, dynamic):
    """Write ``model`` (on MindSpore's stock operators) to ``path`` (which ends with the format's extension)
    for input ``shape``."""
    import mindspore as ms

    from .onnx_writer import is_writable, write_onnx

    if fmt == "ONNX" and is_writable(model):
        write_onnx(model, path, shape, dynamic)
    elif fmt == "ONNX":
        if dynamic:
            raise ExportError(f"dynamic ONNX export is available for CoaT models only ({type(model).__name__} "
                              f"goes through mindspore.onnx.export, which writes every shape into the graph)")
        # A new wrapper cell each time: MindSpore caches the 'export.onnx' graph per cell and input
        # shape, and exporting a cached graph a second time fails inside the exporter.
        ms.onnx.export(_Fresh(model), _export_signature(shape, None), file_name=path, input_names=["image"],
                       output_names=["logits"])
    else:
        ms.export(model, _export_signature(shape, dynamic), file_name=path, file_format=fmt)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise ExportError(f"MindSpore did not write {fmt} file {path}")


def _record(model, checkpoint_meta=None):
    """The record of the weights an export holds: the checkpoint's, else the one the model was loaded with."""
    return dict(checkpoint_meta or getattr(model, "weights_meta", None) or {})


def _metadata(model, fmt, input_shape, checkpoint_meta=None, dynamic=None, checked_shapes=()):
    """``<file>.json`` next to the export: input shape (-1 where dynamic), the eval preprocessing (the
    weights' record when it has one, else the model's default) and the class names, for predict."""
    from .data.transforms import weights_preprocessing

    record = _record(model, checkpoint_meta)
    pre = weights_preprocessing(record, model, image_size=tuple(input_shape[-2:]))
    out = {"format": fmt, "architecture": getattr(model, "pretrained_cfg", {}).get("architecture"),
           "input_shape": list(file_shape(input_shape, dynamic)), "dynamic": dynamic, "checked_shapes": [list(s) for s in checked_shapes],
           "num_classes": getattr(model, "num_classes", None), "preprocessing": pre.as_dict()}
    if record.get("class_names"):
        out["class_names"] = list(record["class_names"])
    return out


def on_backend(model, backend):
    """``model`` rebuilt on operator set ``backend`` (a CoaT's ``with_backend``); other Cells as they are."""
    with_backend = getattr(model, "with_backend", None)
    return model if with_backend is None else with_backend(backend)


def export_model(model, file_name, file_format="MINDIR", batch_size=1, image_size=None, seed=0,
                 verify=True, device_target=None, reference=None, checkpoint_meta=None, dynamic=None):
    """Export ``model`` to ``file_name`` (extension added) and check the file; returns ExportResult.

    The file is checked in a fresh process against the model on MindSpore's stock operators, run op by
    op, at ``check_shapes`` (one shape, or three for a ``dynamic`` "batch" / "shape" file).
    ``image_size`` (H, W) defaults to the weights' evaluation size (data.transforms.weights_preprocessing:
    the recorded one, else the model's pretrained input size); H and W must be multiples of the model's
    stride (32). ``reference``, if given, is the expected output on the first check input (saves
    recomputing it when several files are written from one model).
    """
    import mindspore as ms

    start = time.perf_counter()
    fmt = check_format(file_format, device_target)
    dynamic = check_dynamic(dynamic, fmt)
    if image_size is None:
        from .data.transforms import weights_preprocessing
        image_size = weights_preprocessing(_record(model, checkpoint_meta), model).image_size
    image_size = tuple(int(s) for s in image_size)
    stride = getattr(model, "stride", 32)
    if len(image_size) != 2 or min(image_size) <= 0 or any(s % stride for s in image_size):
        raise ExportError(f"image size {image_size} is not supported: height and width must be positive "
                          f"multiples of {stride}")
    if int(batch_size) < 1:
        raise ExportError(f"batch size must be >= 1, got {batch_size}")
    final = output_path(file_name, fmt)
    check_writable(final)

    model.set_train(False)
    in_chans = getattr(model, "in_chans", 3)
    shape = (int(batch_size), in_chans) + image_size
    shapes = check_shapes(batch_size, image_size, dynamic, stride)
    inputs = [example_input(b, (h, w), in_chans, seed + i) for i, (b, h, w) in enumerate(shapes)]
    checking = verify and fmt != "AIR"
    stock = on_backend(model, "stock")  # what MINDIR / AIR hold, and the reference of every check
    references = []
    if checking:
        references = [reference if (i == 0 and reference is not None) else reference_output(stock, ms.Tensor(x))
                      for i, x in enumerate(inputs)]
    result = ExportResult(final, fmt, file_shape(shape, dynamic), dynamic)

    def write_and_check(tmp):
        _write(stock, shape, tmp, fmt, dynamic)
        _check(tmp, fmt, inputs, references, result)
        meta = _metadata(model, fmt, shape, checkpoint_meta, dynamic, [x.shape for x in inputs] if checking else ())
        atomic_write_text(final + ".json", json.dumps(meta, indent=2))

    atomic_write(final, write_and_check, suffix=FORMATS[fmt])
    result.seconds = time.perf_counter() - start
    return result


def reference_output(model, tensor):
    """The Cell's output, run op by op (PyNative): no graph compile, independent of the exporter's."""
    import mindspore as ms

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return model(tensor).asnumpy()
    finally:
        ms.set_context(mode=mode)


def _check(path, fmt, inputs, references, result):
    """Run the written file on each input in a fresh process and compare with ``references`` (empty:
    not checked); fills ``result``."""
    if not references:
        result.verified_by = ("AIR files run only on Ascend (compile it with ATC to check)"
                              if fmt == "AIR" else "verification switched off")
        return
    outs = verify_fresh([(path, fmt, x) for x in inputs])
    result.verified_by = ("mindspore.load + nn.GraphCell in a fresh process" if fmt == "MINDIR"
                          else "onnxruntime (CPU) in a fresh process")
    result.tolerance = TOLERANCES[fmt]
    result.checked_shapes = [x.shape for x in inputs]
    diffs = [relative_diff(out, ref) for out, ref in zip(outs, references)]
    result.max_abs_diff = max(d[0] for d in diffs)
    result.rel_diff = max(d[1] for d in diffs)
    for x, (abs_diff, rel) in zip(inputs, diffs):
        if not rel <= result.tolerance:
            raise ExportError(f"{fmt} file disagrees with the Cell at input {'x'.join(map(str, x.shape))}: relative "
                              f"difference {rel:.3g} > {result.tolerance:g} (max |diff| {abs_diff:.3g}); "
                              f"file not written")


# ----------------------------------------------------------------------------------------------
# Reading an exported file back
# ----------------------------------------------------------------------------------------------

def mindir_input_shape(path):
    """The input shape (N, C, H, W) a MindIR file was exported with, read from the file's graph.

    A dimension exported as dynamic is -1. ExportError for a missing file, or one that is not a
    MindIR file with a single 4-D input.
    """
    from google.protobuf.message import DecodeError
    from mindspore.train import mind_ir_pb2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExportError(f"MindIR file not found: {path}")
    proto = mind_ir_pb2.ModelProto()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
    except (DecodeError, ValueError) as exc:
        raise ExportError(f"{path} is not a MindIR file ({first_line(exc)[:80]})") from None
    if proto.producer_name != "MindSpore":  # protobuf parses other formats' bytes (an ONNX file) leniently
        raise ExportError(f"{path} is not a MindIR file (written by {proto.producer_name or 'an unknown producer'})")
    inputs = list(proto.graph.input)
    if len(inputs) != 1 or len(inputs[0].tensor) != 1:
        raise ExportError(f"{path}: expected a MindIR file with one image input, found {len(inputs)} inputs")
    dims = tuple(int(d) for d in inputs[0].tensor[0].dims)
    if len(dims) != 4:
        raise ExportError(f"{path}: the MindIR input has shape {dims}, not (N, C, H, W)")
    return dims
