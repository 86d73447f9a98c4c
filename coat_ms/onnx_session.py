"""ONNX Runtime sessions as coat_ms opens them: export checks, predict, quantization and the benchmark.

Only onnxruntime and numpy are imported here, so a process that runs an ONNX file needs neither
MindSpore nor torch.
"""
import os

from .errors import CoatError, first_line


class OnnxRuntimeError(CoatError):
    """onnxruntime is missing, or an ONNX file cannot be loaded."""


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxRuntimeError("onnxruntime is not installed: pip install 'coat_ms[export]'") from None
    return onnxruntime


def session_options(threads=None):
    """SessionOptions with all graph optimisations; ``threads`` intra-op threads (None: ORT's default)."""
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def open_session(path, threads=None):
    """An InferenceSession of ``path`` on the CPU, with a one-line error for missing or broken files."""
    ort = _ort()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OnnxRuntimeError(f"ONNX file not found: {path}")
    try:
        return ort.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise OnnxRuntimeError(f"cannot load ONNX file {path}: {first_line(exc)[:300]}") from None


def input_shape_of(dims, batch, image_size):
    """The concrete (B, C, H, W) for an ONNX input shape whose dynamic entries are names or None."""
    fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
    fill = [batch, None, image_size[0], image_size[1]]
    return tuple(f if f is not None else fill[i] for i, f in enumerate(fixed))


def onnx_input_shape(session):
    """(B, C, H, W) of a session's image input, -1 where the dimension is dynamic."""
    dims = session.get_inputs()[0].shape
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims)


def run(session, array):
    """The first output of ``session`` on one input array."""
    return session.run(None, {session.get_inputs()[0].name: array})[0]
