"""Export a CoaT Cell to MINDIR / ONNX / AIR, and trust the file only after checking it.

* MINDIR: written with ``mindspore.export``, then loaded back with ``mindspore.load`` +
  ``nn.GraphCell`` in a fresh Python process and run on the same random input as the live Cell;
  relative difference (max |a - b| / max |b|) must be <= 1e-6.
* ONNX: MindSpore's exporter has neither Erf nor ResizeBilinearV2, so the file is written from the
  model on the ``onnx`` operator set (exact GELU without Erf, bilinear resizes as constant matrix
  products; coat_ms/models/backend.py), then run with onnxruntime and compared with the model on
  MindSpore's stock operators (relative <= 1e-4).
* AIR: only with an Ascend backend; elsewhere a clear error before anything is compiled.

Exported files hold MindSpore's operators only: the model is rebuilt for the export's operator set
through ``CoaT.with_backend`` (a custom C++ kernel points at a local .so, which neither Ascend nor
ONNX can run). Files are written with ``coat_ms.fileio.atomic_write`` and the check runs on the
temporary file, so a failed or interrupted export never leaves a file behind.
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .errors import CoatError
from .fileio import atomic_write, atomic_write_text

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
TOLERANCES = {"MINDIR": 1e-6, "ONNX": 1e-4, "AIR": None}


class ExportError(CoatError):
    """Export refused (bad path, format not available here) or the written file failed its check."""


@dataclasses.dataclass
class ExportResult:
    path: str
    file_format: str
    input_shape: tuple
    max_abs_diff: float = None
    rel_diff: float = None
    tolerance: float = None
    verified_by: str = ""
    seconds: float = 0.0

    def summary(self):
        lines = [f"wrote {self.path} ({self.file_format}, input {'x'.join(map(str, self.input_shape))}, "
                 f"{os.path.getsize(self.path) / 2**20:.1f} MiB, {self.seconds:.1f} s)"]
        if self.rel_diff is not None:
            lines.append(f"verified with {self.verified_by}: max |diff| {self.max_abs_diff:.3g}, "
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
    """The operator set a file of ``file_format`` is written from: "onnx" for ONNX, else "stock"."""
    return "onnx" if file_format == "ONNX" else "stock"


def example_input(batch_size, image_size, in_chans=3, seed=0):
    """The random (B, C, H, W) float32 input used for export and for the check."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, in_chans, image_size[0], image_size[1])).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

_WORKER = "from coat_ms.export import _mindir_worker; _mindir_worker()"


def verify_mindir_fresh(jobs, timeout=900):
    """Run MindIR files in a fresh process: jobs = [(mindir_path, input_array)] -> list of outputs.

    The child imports only mindspore and numpy, loads each file with ``mindspore.load`` and runs it
    through ``nn.GraphCell``; nothing of this process (graphs, parameters) is reused.
    """
    with tempfile.TemporaryDirectory(prefix="coat_verify_") as tmp:
        spec = []
        for i, (path, array) in enumerate(jobs):
            inp, out = os.path.join(tmp, f"in{i}.npy"), os.path.join(tmp, f"out{i}.npy")
            np.save(inp, array)
            spec.append({"mindir": os.fspath(path), "input": inp, "output": out})
        env = dict(os.environ, GLOG_v=os.environ.get("GLOG_v", "3"))
        proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"the MindIR file could not be loaded and run in a fresh process: {tail}")
        return [np.load(item["output"]) for item in spec]


def _mindir_worker():
    """Child side of verify_mindir_fresh (argv[1]: JSON job list)."""
    import mindspore as ms
    from mindspore import nn

    ms.set_context(mode=ms.GRAPH_MODE)
    for job in json.loads(sys.argv[1]):
        net = nn.GraphCell(ms.load(job["mindir"]))
        out = net(ms.Tensor(np.load(job["input"])))
        np.save(job["output"], out.asnumpy())
    sys.stdout.flush()
    os._exit(0)


def run_onnx(path, array):
    """Run an ONNX file with onnxruntime on one input; returns the first output."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("onnxruntime is not installed: pip install 'coat_ms[export]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: array})[0]


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


def _write(net, tensor, path, fmt):
    """Write ``net`` (already on the export's operator set) to ``path``, which ends with the format's extension."""
    import mindspore as ms

    if fmt == "ONNX":
        # A new wrapper cell each time: MindSpore caches the 'export.onnx' graph per cell and input
        # shape, and exporting a cached graph a second time fails inside the exporter.
        ms.onnx.export(_Fresh(net), tensor, file_name=path, input_names=["image"], output_names=["logits"])
    else:
        ms.export(net, tensor, file_name=path, file_format=fmt)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise ExportError(f"MindSpore did not write {fmt} file {path}")


def _metadata(model, fmt, input_shape, checkpoint_meta=None):
    """``<file>.json`` next to the export: input shape, the eval preprocessing (the checkpoint's record
    when it has one, else the model's default) and the class names, for predict."""
    from .data.transforms import weights_preprocessing

    record = dict(checkpoint_meta or getattr(model, "weights_meta", None) or {})
    pre = weights_preprocessing(record, model, image_size=tuple(input_shape[-2:]))
    out = {"format": fmt, "architecture": getattr(model, "pretrained_cfg", {}).get("architecture"),
           "input_shape": list(input_shape), "num_classes": getattr(model, "num_classes", None),
           "preprocessing": pre.as_dict()}
    if record.get("class_names"):
        out["class_names"] = list(record["class_names"])
    return out


def on_backend(model, backend):
    """``model`` rebuilt on operator set ``backend`` (a CoaT's ``with_backend``); other Cells as they are."""
    with_backend = getattr(model, "with_backend", None)
    return model if with_backend is None else with_backend(backend)


def export_model(model, file_name, file_format="MINDIR", batch_size=1, image_size=None, seed=0,
                 verify=True, device_target=None, reference=None, checkpoint_meta=None):
    """Export ``model`` to ``file_name`` (extension added) and check the file; returns ExportResult.

    The file is written from ``model`` rebuilt on the format's operator set (``export_backend``), and
    checked against the model on MindSpore's stock operators, run op by op. ``image_size`` (H, W)
    defaults to the model's pretrained input size; H and W must be multiples of the model's stride
    (32). ``reference``, if given, is the expected output on the example input (saves recomputing it
    when several files are written from one model).
    """
    import mindspore as ms

    start = time.perf_counter()
    fmt = check_format(file_format, device_target)
    if image_size is None:  # the size the checkpoint was trained at, else the model's default
        recorded = (checkpoint_meta or {}).get("preprocessing", {}).get("image_size")
        image_size = tuple(recorded or getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))[-2:])
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
    net = on_backend(model, export_backend(fmt))
    array = example_input(int(batch_size), image_size, getattr(model, "in_chans", 3), seed)
    tensor = ms.Tensor(array)
    if verify and fmt != "AIR" and reference is None:  # ONNX too is checked against exact (erf) GELU
        reference = reference_output(on_backend(net, "stock"), tensor)
    result = ExportResult(final, fmt, array.shape)

    def write_and_check(tmp):
        _write(net, tensor, tmp, fmt)
        _check(tmp, fmt, array, reference if verify else None, result)
        atomic_write_text(final + ".json", json.dumps(_metadata(model, fmt, array.shape, checkpoint_meta),
                                                            indent=2))

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


def _check(path, fmt, array, reference, result):
    """Run the written file on ``array`` and compare with ``reference`` (None: not checked); fills ``result``."""
    if reference is None or fmt == "AIR":
        result.verified_by = ("AIR files run only on Ascend (compile it with ATC to check)"
                              if fmt == "AIR" else "verification switched off")
        return
    if fmt == "MINDIR":
        out = verify_mindir_fresh([(path, array)])[0]
        result.verified_by = "mindspore.load + nn.GraphCell in a fresh process"
    else:
        out = run_onnx(path, array)
        result.verified_by = "onnxruntime (CPU)"
    result.max_abs_diff, result.rel_diff = relative_diff(out, reference)
    result.tolerance = TOLERANCES[fmt]
    if not result.rel_diff <= result.tolerance:
        raise ExportError(f"{fmt} file disagrees with the Cell: relative difference {result.rel_diff:.3g} "
                          f"> {result.tolerance:g} (max |diff| {result.max_abs_diff:.3g}); file not written")


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
        raise ExportError(f"{path} is not a MindIR file ({str(exc).splitlines()[0][:80]})") from None
    inputs = list(proto.graph.input)
    if len(inputs) != 1 or len(inputs[0].tensor) != 1:
        raise ExportError(f"{path}: expected a MindIR file with one image input, found {len(inputs)} inputs")
    dims = tuple(int(d) for d in inputs[0].tensor[0].dims)
    if len(dims) != 4:
        raise ExportError(f"{path}: the MindIR input has shape {dims}, not (N, C, H, W)")
    return dims
