"""INT8: post-training static quantization of an exported ONNX file with ONNX Runtime's tooling.

    python export.py --ckpt_file X.ckpt --file_format ONNX --quantize int8 --calib_dir photos/

What is quantized (``weight_nodes``): the products with a weight, i.e. every MatMul / Gemm / Conv with
an initializer input (qkv, proj, the MLPs, the patch embeddings, the depthwise convolutions, the head),
as QuantizeLinear/DequantizeLinear pairs (QDQ format: int8 weights per output channel, uint8 activations
with MinMax ranges; a weight that is a MatMul's first input is uint8 per tensor, the form ORT's int8
MatMul takes there). ONNX Runtime runs each quantized product with its int8 kernels. Left in float32: LayerNorm,
GELU, Softmax, the resizes and the attention's two activation-by-activation products (softmax(k)^T v
and q (k^T v)): a uint8 softmax over thousands of tokens would round most of its entries to zero.

Calibration images go through the model's own evaluation preprocessing (the ``<file>.json`` export
writes: resize, centre crop, mean/std), decoded by the same pipeline as validate.py and predict.
The images of ``calib_dir`` are split once, with a fixed seed: up to ``calib_size`` calibrate, the rest
(at least a fifth) are held out, and the INT8 file is compared with the float32 file on them: top-1
agreement, and the largest change of a top-1 probability.
"""
import dataclasses
import json
import os
import time

import numpy as np

from .errors import CoatError

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")


class QuantizeError(CoatError):
    """Quantization refused: no images, not an ONNX file, or an INT8 file that disagrees too often."""


@dataclasses.dataclass
class QuantizeResult:
    path: str
    calibration_images: int
    held_out_images: int
    agreement: float
    max_top1_prob_change: float
    quantized_nodes: int
    seconds: float = 0.0

    def summary(self):
        return (f"wrote {self.path} (INT8 QDQ, {self.quantized_nodes} weight products quantized, "
                f"{os.path.getsize(self.path) / 2**20:.1f} MiB, {self.seconds:.1f} s)\n"
                f"calibrated on {self.calibration_images} images; on {self.held_out_images} held-out images "
                f"top-1 agrees with the float32 file on {100 * self.agreement:.1f}% "
                f"(largest top-1 probability change {self.max_top1_prob_change:.3f})")


def split_images(paths, calib_size, seed=0):
    """(calibration paths, held-out paths): a seeded shuffle, at most ``calib_size`` to calibrate and at
    least a fifth (and at least one image) held out."""
    paths = list(paths)
    if len(paths) < 2:
        raise QuantizeError(f"calibration needs at least 2 images (one is held out for the check), found {len(paths)}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_cal = max(1, min(int(calib_size), len(paths) - max(1, len(paths) // 5)))
    return [paths[i] for i in order[:n_cal]], [paths[i] for i in order[n_cal:]]


def image_batches(paths, pre, batch_size, fixed_batch=False, workers=1):
    """(float32 NCHW batch, number of real images in it) over the readable images among ``paths``
    (unreadable ones are dropped). ``fixed_batch``: a short batch is filled up by repeating its images
    (a file exported for one batch size takes nothing else)."""
    from .data.files import ImageList
    from .data.pipeline import eval_dataset

    images = ImageList("", [], [os.path.abspath(p) for p in paths], np.zeros(len(paths), np.int32))
    dataset, _ = eval_dataset(images, pre, batch_size, workers)
    for image, _, bad in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        image = image[~bad.astype(bool)].astype(np.float32)
        n = len(image)
        if not n:
            continue
        if fixed_batch and n < batch_size:
            image = image[np.arange(batch_size) % n]
        yield image, n


def weight_nodes(proto):
    """Names of the MatMul / Gemm / Conv nodes that multiply by a weight (an initializer input)."""
    weights = {init.name for init in proto.graph.initializer}
    return [node.name for node in proto.graph.node
            if node.op_type in QUANTIZED_OPS and any(i in weights for i in node.input)]


def left_weights(proto):
    """Weights that are a MatMul's first input (W @ x, the writer's channels-first q, k, v projections)."""
    weights = {init.name for init in proto.graph.initializer}
    return sorted({node.input[0] for node in proto.graph.node if node.op_type == "MatMul" and node.input[0] in weights})


def _reader(batches, input_name):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            item = next(self.batches, None)
            return None if item is None else {input_name: item[0]}
    return Reader()


def quantize_onnx(fp32_path, int8_path, calib_batches):
    """Write ``int8_path``: ``fp32_path`` with its weight products quantized (QDQ), activation ranges from
    ``calib_batches`` ((float32 NCHW array, real images) pairs). Returns the number of quantized nodes.

    The float32 graph first goes through ORT's recommended quantization pre-processing (shape inference
    and its basic graph optimisations), as ORT's quantization guide does.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .onnx_session import open_session

    input_name = open_session(fp32_path).get_inputs()[0].name
    with tempfile.TemporaryDirectory(prefix="coat_quant_") as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(os.fspath(fp32_path), prepared)
        proto = onnx.load(prepared)
        nodes = weight_nodes(proto)
        if not nodes:
            raise QuantizeError(f"{fp32_path}: no MatMul / Gemm / Conv with a weight to quantize")
        # ORT's int8 MatMul kernels take the first input as uint8 with one scale: a weight there (the
        # writer's channels-first W @ x) gets uint8 per-tensor, or the product stays in float
        per_tensor = {name: [{"quant_type": QuantType.QUInt8}] for name in left_weights(proto)}
        quantize_static(prepared, os.fspath(int8_path), _reader(calib_batches, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=nodes, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": per_tensor})
    return len(nodes)


def compare_top1(fp32_path, int8_path, batches):
    """(top-1 agreement, largest change of the fp32 top-1 class's probability, images) of two ONNX files
    on ``batches`` ((array, real images) pairs)."""
    from .evaluation import softmax
    from .onnx_session import open_session, run

    a, b = open_session(fp32_path), open_session(int8_path)
    agree, total, change = 0, 0, 0.0
    for batch, n in batches:
        pa, pb = softmax(run(a, batch)[:n]), softmax(run(b, batch)[:n])
        top = pa.argmax(1)
        agree += int((top == pb.argmax(1)).sum())
        total += n
        change = max(change, float(np.abs(pa[np.arange(len(top)), top] - pb[np.arange(len(top)), top]).max()))
    return (agree / total if total else 0.0), change, total


def int8_path_for(fp32_path):
    """X.onnx -> X.int8.onnx"""
    stem = fp32_path[:-5] if fp32_path.lower().endswith(".onnx") else fp32_path
    return stem + ".int8.onnx"


def quantize_export(fp32_path, calib_dir, calib_size=256, min_agreement=0.9, batch_size=8, workers=1, seed=0):
    """Quantize an exported, verified ONNX file (with its ``.json``) to ``<name>.int8.onnx``.

    Calibrates on images of ``calib_dir`` (searched recursively) at the file's recorded preprocessing and
    checks top-1 agreement on the held-out rest; below ``min_agreement`` nothing is written.
    """
    from .data.transforms import weights_preprocessing
    from .fileio import atomic_write, atomic_write_text
    from .inference import list_image_files, read_sidecar
    from .onnx_session import onnx_input_shape, open_session

    start = time.perf_counter()
    fp32_path = os.fspath(fp32_path)
    if not os.path.isdir(calib_dir):
        raise QuantizeError(f"--calib_dir {calib_dir} is not a folder of images")
    calib, held = split_images(list_image_files([calib_dir]), calib_size, seed)
    meta = read_sidecar(fp32_path)
    shape = onnx_input_shape(open_session(fp32_path))
    size = tuple(shape[-2:]) if shape[-1] > 0 else None
    pre = weights_preprocessing(meta, image_size=size)
    fixed = shape[0] > 0
    batch = int(shape[0]) if fixed else int(batch_size)
    final = int8_path_for(fp32_path)
    result = {}

    def write_and_check(tmp):
        result["nodes"] = quantize_onnx(fp32_path, tmp, image_batches(calib, pre, batch, fixed, workers))
        agreement, change, n = compare_top1(fp32_path, tmp, image_batches(held, pre, batch, fixed, workers))
        if n == 0:
            raise QuantizeError(f"none of the {len(held)} held-out images of {calib_dir} could be read")
        if agreement < min_agreement:
            raise QuantizeError(f"the INT8 file agrees with the float32 file on {100 * agreement:.1f}% of {n} held-out "
                                f"images, below --min_agreement {min_agreement:g}; nothing written (calibrate on "
                                f"more images like the ones it will see, or keep the float32 file)")
        result.update(agreement=agreement, change=change, held=n)
        record = dict(meta, format="ONNX", quantization={
            "type": "int8 static (onnxruntime QDQ, per-channel weights, MinMax)", "calibration_images": len(calib),
            "held_out_images": n, "top1_agreement": agreement, "max_top1_prob_change": change,
            "float32_file": os.path.basename(fp32_path)})
        atomic_write_text(final + ".json", json.dumps(record, indent=2))

    atomic_write(final, write_and_check, suffix=".onnx")
    return QuantizeResult(final, len(calib), result["held"], result["agreement"], result["change"], result["nodes"],
                          time.perf_counter() - start)
