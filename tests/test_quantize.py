"""INT8: export.py --quantize int8 on a trained checkpoint (the shared train.py run on the digits), checked
here independently on its validation split; the refusals; the calibration split. The study on the demo's
fully trained digits model and a model fine-tuned on photos is benchmarks/int8_study.py (docs/deploy.md)."""
import json
import os

import numpy as np
import pytest

from coat_ms.errors import CoatError
from coat_ms.quantize import QuantizeError, compare_top1, image_batches, split_images, weight_nodes
from helpers import ROOT


def export_main(*args):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_cli", os.path.join(ROOT, "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def test_int8_of_a_trained_model_agrees_with_float32(trained_run, tmp_path):
    """The trained digits checkpoint exported with --quantize int8: an INT8 QDQ file whose weight products
    are quantized; on the 359 validation images (not seen by calibration) its top-1 agrees with the
    float32 file's and its accuracy is within 2 points."""
    import onnx

    from coat_ms.data.files import list_split
    from coat_ms.data.transforms import preprocessing
    from coat_ms.inference import read_sidecar
    from coat_ms.onnx_session import open_session, run

    data, run_dir, _ = trained_run
    assert export_main("--ckpt_file", run_dir / "latest.ckpt", "--file_format", "ONNX", "--dynamic", "batch",
                       "--file_name", tmp_path / "digits", "--quantize", "int8", "--calib_dir", data / "train",
                       "--calib_size", 128) == 0
    fp32, int8 = tmp_path / "digits.onnx", tmp_path / "digits.int8.onnx"
    record = json.loads((tmp_path / "digits.int8.onnx.json").read_text())
    q = record["quantization"]
    assert q["calibration_images"] == 128 and q["held_out_images"] > 200 and q["top1_agreement"] >= 0.9
    assert record["class_names"] == [str(d) for d in range(10)] and record["preprocessing"]["crop_pct"] == 1.0
    proto = onnx.load(str(int8))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in proto.graph.node}
    stored = {init.data_type for init in proto.graph.initializer if len(init.dims) == 2 and min(init.dims) > 1}
    assert stored <= {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}, stored  # every weight matrix in 8 bits

    # independently: the validation split, with labels, in the model's label order
    meta = read_sidecar(str(fp32))
    images = list_split(str(data / "val"), "")
    pre = preprocessing(meta["preprocessing"])
    a, b = open_session(fp32), open_session(int8)
    paths = [images.path(i) for i in range(len(images))]
    labels = images.labels
    top_a, top_b = [], []
    for batch, n in image_batches(paths, pre, 32):
        top_a += list(run(a, batch)[:n].argmax(1))
        top_b += list(run(b, batch)[:n].argmax(1))
    top_a, top_b = np.array(top_a), np.array(top_b)
    assert len(top_a) == len(labels) == 359
    agreement = (top_a == top_b).mean()
    drop = (top_a == labels).mean() - (top_b == labels).mean()
    assert agreement >= 0.95 and drop <= 0.02, (agreement, drop, (top_a == labels).mean())


def test_int8_refusals(tmp_path):
    (tmp_path / "one").mkdir()
    from PIL import Image
    Image.new("RGB", (40, 40)).save(tmp_path / "one" / "a.png")
    base = ["--model_name", "coat_lite_tiny", "--file_name", tmp_path / "m"]
    with pytest.raises(CoatError, match="use --file_format ONNX"):
        export_main(*base, "--quantize", "int8", "--calib_dir", tmp_path / "one")
    with pytest.raises(CoatError, match="needs --calib_dir"):
        export_main(*base, "--file_format", "ONNX", "--quantize", "int8")
    with pytest.raises(CoatError, match="with --quantize int8 only"):
        export_main(*base, "--file_format", "ONNX", "--calib_dir", tmp_path / "one")
    with pytest.raises(CoatError, match="min_agreement"):
        export_main(*base, "--file_format", "ONNX", "--quantize", "int8", "--calib_dir", tmp_path / "one",
                    "--min_agreement", "1.5")
    assert sorted(os.listdir(tmp_path)) == ["one"]  # refused before anything was written
    with pytest.raises(QuantizeError, match="at least 2 images"):
        split_images([str(tmp_path / "one" / "a.png")], 256)


def test_calibration_split_holds_out_at_least_a_fifth():
    paths = [f"img{i}.png" for i in range(10)]
    calib, held = split_images(paths, 256)
    assert len(calib) == 8 and len(held) == 2 and not set(calib) & set(held) and set(calib) | set(held) == set(paths)
    assert split_images(paths, 256) == (calib, held)  # seeded
    calib, held = split_images([f"{i}" for i in range(1000)], 256)
    assert len(calib) == 256 and len(held) == 744


def test_weight_nodes_are_the_products_with_a_weight(tmp_path):
    """Weight products are quantized; the attention's activation-by-activation products are not."""
    import onnx

    import coat_ms
    from coat_ms.onnx_writer import write_onnx

    model = coat_ms.create_model("coat_lite_tiny", embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1),
                                 backend="stock")
    model.set_train(False)
    write_onnx(model, str(tmp_path / "m.onnx"), (1, 3, 32, 32))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    chosen = set(weight_nodes(proto))
    products = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    weights = {i.name for i in proto.graph.initializer}
    # per block: q, k, v, proj, fc1, fc2 and the 4 convolutions (cpe, crpe x 3); plus 4 patch embeddings, head
    assert len(chosen) == 4 * 10 + 4 + 1
    assert all(any(i in weights for i in n.input) == (n.name in chosen) for n in products)
    assert sum(1 for n in products if n.name not in chosen) == 4 * 2  # softmax(k)^T v and q (k^T v) per block
    # a file compared with itself agrees everywhere
    x = (np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32), 1)
    assert compare_top1(tmp_path / "m.onnx", tmp_path / "m.onnx", [x])[:1] == (1.0,)
