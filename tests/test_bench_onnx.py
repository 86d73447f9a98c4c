"""The benchmark's ONNX Runtime and bf16 rows: anchors, targets, report, --skip; the ORT worker on a real file."""
import numpy as np
import pytest

from benchmarks import bench


def synthetic_result():
    ips = {"coat_ms": 30.0, "timm": 20.0, "timm-bf16": 40.0, "onnx-coat_ms": 24.0, "onnx-timm": 16.0, "onnx-int8": 36.0}
    return {
        "machine": {"cpus": 2, "bf16": True, "load_avg_start": (1.0, 1.0, 1.0), "load_avg_end": (1.0, 1.0, 1.0)},
        "settings": {"batches": [1], "train_batch": 8},
        "matmul": {"torch-matmul": {"gflops": 100.0}},
        "models": {"m": {"gmacs": 1.0, "train": {}, "compile_first_call_s": {}, "peak_rss_mb": {},
                         "infer": {f"{f}/b1": {"median_s": 1 / v, "img_per_s": v} for f, v in ips.items()}}}}


def test_onnx_rows_are_compared_with_their_anchors():
    result = synthetic_result()
    rows, _ = bench.summarize(result)
    by = {r["framework"]: r for r in rows}
    assert [r["framework"] for r in rows] == ["coat_ms", "timm", "timm-bf16", "onnx-coat_ms", "onnx-timm", "onnx-int8"]
    assert by["onnx-coat_ms"]["anchor"] == "onnx-timm" and by["onnx-coat_ms"]["vs_anchor"] == 1.5
    assert by["onnx-int8"]["anchor"] == "onnx-coat_ms" and by["onnx-int8"]["vs_anchor"] == 1.5
    assert by["onnx-int8"]["vs_timm"] == 1.8 and by["timm-bf16"]["vs_timm"] == 2.0
    got = {label: (value, met) for _, label, value, _, met in bench.targets(result, rows)}
    assert got["infer b1 ONNX in ORT: ours/timm's"] == (1.5, True)
    assert got["infer b1 coat_ms/timm"] == (1.5, True)  # >= 1.3
    assert got["infer b1 coat_ms/timm-bf16"] == (0.75, None)  # reported, no goal
    assert got["infer b1 ORT INT8/ours fp32"] == (1.5, None)
    assert got["infer b1 ORT INT8/timm's ONNX"] == (2.25, None)
    md = bench.to_markdown(result)
    assert "| m | infer | onnx-coat_ms | 1 | 24.00 | 42 | 1.20 | 1.50 (onnx-timm) |" in md
    assert "| m | infer | onnx-int8 | 1 | 36.00 | 28 | 1.80 | 1.50 (onnx-coat_ms) |" in md


def test_skip_knows_the_rows():
    args = bench.build_parser().parse_args(["--skip", "onnx,mindcv"])
    assert args.skip == "onnx,mindcv"
    from coat_ms.errors import CoatError
    with pytest.raises(CoatError, match="unknown row"):
        bench.main(["--skip", "onnx-tim", "--out", "/nonexistent"])


def test_ort_worker_times_a_file(tmp_path):
    """The worker the ONNX rows use, on a real (narrow) file written by the ONNX writer."""
    import coat_ms
    from benchmarks.bench_onnx import OrtWorker, onnx_file
    from coat_ms.onnx_writer import write_onnx

    model = coat_ms.create_model("coat_lite_tiny", embed_dims=(16, 16, 16, 16), serial_depths=(1, 1, 1, 1),
                                 backend="stock")
    model.set_train(False)
    write_onnx(model, onnx_file(str(tmp_path), "onnx-coat_ms", "m"), (1, 3, 224, 224), dynamic="batch")
    worker = OrtWorker("onnx-coat_ms", "m", "infer", str(tmp_path))
    assert all(np.isfinite(worker.call(b)) and worker.call(b) > 0 for b in (1, 2))
