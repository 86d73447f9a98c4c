"""Export: MINDIR round trip in a fresh process, ONNX parity with onnxruntime, the Cell and timm, the
operators ONNX Runtime fuses, dynamic batch / shape files at several shapes, bad input.

Default run: both architectures (CoaT-Lite, and CoaT with parallel blocks) as narrow one-block
versions of coat_lite_tiny / coat_tiny, at 224x224 and 64x96.  The full coat_lite_tiny and coat_tiny
run behind the slow marker:  .venv/bin/python -m pytest -q -m slow tests/test_export.py
"""
import json
import os
import subprocess
import sys

import mindspore as ms
import pytest
import torch

import coat_ms
from coat_ms.export import (ExportError, check_dynamic, example_input, export_model, mindir_input_shape,
                            reference_output, relative_diff, run_onnx, verify_fresh, verify_mindir_fresh)
from helpers import one_error_line, refused

import export as export_cli  # noqa: E402  (called in-process for its one-line errors)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NARROW = {"coat_lite_tiny": dict(embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1)),
          "coat_tiny": dict(embed_dims=(32, 32, 32, 32), serial_depths=(1, 1, 1, 1), parallel_depth=1)}
SIZES = [(224, 224), (64, 96)]


def timm_and_ms(name, **arch):
    """A timm model with seeded random weights and the MindSpore model holding the same weights."""
    import timm

    torch.manual_seed(0)
    tm = timm.create_model(name, pretrained=False, **arch).eval()
    state = tm.state_dict()
    with torch.no_grad():  # random but not tiny head, so logits are well spread
        for key in ("head.weight", "head.bias"):
            state[key].mul_(20.0)
    model = coat_ms.create_model(name, **arch)
    for pname, param in model.parameters_dict().items():
        param.set_data(ms.Tensor(state[pname].numpy()))  # parameter names equal timm's keys
    model.set_train(False)
    return tm, model


def export_all(name, arch, folder):
    """Export MINDIR and ONNX at every size; returns the results.

    ONNX files are checked by the library on writing; the MindIR files of one model are checked
    together in one fresh process by the tests (one MindSpore start instead of one per file).
    """
    tm, model = timm_and_ms(name, **arch)
    out = {}
    for size in SIZES:
        x = example_input(1, size)
        ref = reference_output(model, ms.Tensor(x))  # PyNative: no extra graph compile
        base = os.path.join(folder, f"{name}_{size[0]}x{size[1]}")
        out[size] = dict(x=x, ref=ref,
                         mindir=export_model(model, base, "MINDIR", image_size=size, verify=False),
                         onnx=export_model(model, base, "ONNX", image_size=size, reference=ref))
    return tm, model, out


@pytest.fixture(scope="module", params=["coat_lite_tiny", pytest.param("coat_tiny", marks=pytest.mark.artefacts)])
def exported(request, tmp_path_factory):
    name = request.param
    tm, model, out = export_all(name, NARROW[name], tmp_path_factory.mktemp(f"export_{name}"))
    return name, tm, model, out


def mindir_op_types(path):
    """The operator types in a MindIR file's graph (node op_type 'REF::Conv2D:41' -> 'Conv2D')."""
    from mindspore.train import mind_ir_pb2

    proto = mind_ir_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return {node.op_type.split("::")[-1].split(":")[0] for node in proto.graph.node}


def check_exports(name, tm, out):
    items = list(out.values())
    # MINDIR: mindspore.load + nn.GraphCell in a fresh process, against the live Cell.
    outs = verify_mindir_fresh([(it["mindir"].path, it["x"]) for it in items])
    for size, item, got in zip(out, items, outs):
        assert relative_diff(got, item["ref"])[1] <= 1e-6, (name, size)
        assert got.shape == item["ref"].shape
    for size, item in out.items():
        mres, ores = item["mindir"], item["onnx"]
        assert os.path.isfile(mres.path) and mres.path.endswith(".mindir")
        assert mres.input_shape == (1, 3) + size
        assert mindir_input_shape(mres.path) == (1, 3) + size  # read from the file's graph, not the sidecar
        # the model runs the C++ kernels; the file was written from its stock-operator twin
        ops_in_file = mindir_op_types(mres.path)
        assert "Conv2D" in ops_in_file and not any("Custom" in op for op in ops_in_file), ops_in_file
        # ONNX: run it again here with onnxruntime, against the Cell's output.
        got = run_onnx(ores.path, item["x"])
        _, rel = relative_diff(got, item["ref"])
        assert rel <= 1e-5, (name, size, rel)
        assert ores.rel_diff <= 1e-5 and "fresh process" in ores.verified_by
        # No temp files left next to the results.
        assert not [f for f in os.listdir(os.path.dirname(mres.path)) if f.endswith(".tmp") or ".tmp." in f]
    # timm (PyTorch) accepts 224 only for CoaT: the ONNX file against the reference implementation.
    item = out[(224, 224)]
    with torch.no_grad():
        want = tm(torch.from_numpy(item["x"])).numpy()
    _, rel = relative_diff(run_onnx(item["onnx"].path, item["x"]), want)
    assert rel <= 1e-4, (name, rel)


def test_mindir_and_onnx_round_trip(exported):
    name, tm, model, out = exported
    assert model.backend.name == "cpu_kernels", "export leaves the caller's model as it was"
    check_exports(name, tm, out)


def test_mindir_input_shape_reads_the_graph_and_refuses_other_files(exported, tmp_path):
    _, _, _, out = exported
    mindir = tmp_path / "copy.mindir"  # without the .json sidecar: the shape comes from the graph
    mindir.write_bytes(open(out[(64, 96)]["mindir"].path, "rb").read())
    assert mindir_input_shape(mindir) == (1, 3, 64, 96)
    (tmp_path / "notes.txt").write_text("not a model\n")
    for path, words in ((out[(64, 96)]["onnx"].path, "not a MindIR file"),
                        (tmp_path / "notes.txt", "not a MindIR file"), (tmp_path / "none.mindir", "not found")):
        with pytest.raises(ExportError, match=words):
            mindir_input_shape(path)


def test_failed_check_leaves_no_file(tmp_path):
    """A file that disagrees with the Cell is refused and nothing is left behind."""
    model = coat_ms.create_model("coat_lite_tiny", **NARROW["coat_lite_tiny"])
    model.set_train(False)
    wrong = reference_output(model, ms.Tensor(example_input(1, (32, 32)))) + 1.0
    with pytest.raises(ExportError, match="disagrees"):
        export_model(model, tmp_path / "bad", "ONNX", image_size=(32, 32), reference=wrong)
    assert os.listdir(tmp_path) == []


@pytest.mark.artefacts
@pytest.mark.parametrize("name", ["coat_lite_tiny", "coat_tiny"])
def test_full_variants_round_trip(name, tmp_path):
    """Full coat_lite_tiny / coat_tiny (several minutes each on 2 CPU cores)."""
    tm, _, out = export_all(name, {}, tmp_path)
    check_exports(name, tm, out)


def test_onnx_export_of_a_mindcv_mode_model(tmp_path):
    """align_corners=True / cpe_residual=False (mindcv's CoaT) exports to ONNX and is checked by onnxruntime."""
    model = coat_ms.create_model("coat_tiny", align_corners=True, cpe_residual=False, **NARROW["coat_tiny"])
    model.set_train(False)
    result = export_model(model, str(tmp_path / "mindcv_mode"), "ONNX", image_size=(64, 96))
    assert os.path.isfile(result.path)
    assert result.verified_by and result.rel_diff <= 1e-5


def ort_optimized_op_types(path, folder):
    """The operator types of the graph ONNX Runtime actually runs, after its fusions."""
    import onnx
    import onnxruntime as ort

    from coat_ms.onnx_session import session_options

    options = session_options()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {node.op_type for node in onnx.load(str(folder / "optimized.onnx")).graph.node}


def test_onnx_is_opset17_in_the_forms_onnxruntime_fuses(exported, tmp_path):
    """LayerNormalization and Erf GELU in the file; ORT runs them as its fused Gelu / LayerNormalization
    kernels (MindSpore's exporter wrote 10-15 elementwise nodes for each, which ORT could not fuse)."""
    import onnx

    name, _, _, out = exported
    path = out[(224, 224)]["onnx"].path
    proto = onnx.load(path)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    ops = {node.op_type for node in proto.graph.node}
    assert {"LayerNormalization", "Erf", "Softmax", "Conv"} <= ops, ops
    assert ("Resize" in ops) == (name == "coat_tiny")  # the parallel blocks' bilinear resizes
    assert not {"Abs", "Exp", "Sqrt", "ReduceMean"} & ops  # no decomposed GELU / LayerNorm left
    fused = ort_optimized_op_types(path, tmp_path)
    assert "Erf" not in fused and {"Gelu", "BiasGelu"} & fused, fused
    assert {"LayerNormalization", "SkipLayerNormalization"} & fused, fused


TOLERANCE = {"MINDIR": 1e-6, "ONNX": 1e-5}


def run_file(path, fmt, x):
    """A MindIR in a fresh process; an ONNX file in onnxruntime here (export already ran it in a fresh one)."""
    return verify_fresh([(path, fmt, x)])[0] if fmt == "MINDIR" else run_onnx(path, x)


@pytest.mark.parametrize("fmt,dynamic", [("ONNX", "shape"), pytest.param("MINDIR", "shape", marks=pytest.mark.artefacts),
                                         pytest.param("ONNX", "batch", marks=pytest.mark.artefacts),
                                         pytest.param("MINDIR", "batch", marks=pytest.mark.artefacts)])
def test_dynamic_file_runs_at_several_shapes(fmt, dynamic, tmp_path):
    """A --dynamic file is checked by export at three shapes, in a fresh process; here it runs again at a
    fourth, against the model; the file records -1 for its dynamic dimensions; H, W not multiples of 32
    fail instead of returning numbers for a cropped image. CoaT with parallel blocks (the resizes follow
    the input's grid). (A batch-dynamic MindIR also runs in test_predict's mixed-size test.)"""
    model = coat_ms.create_model("coat_tiny", **NARROW["coat_tiny"])
    model.set_train(False)
    result = export_model(model, tmp_path / "dyn", fmt, batch_size=2, image_size=(64, 96), dynamic=dynamic)
    assert "fresh process" in result.verified_by
    shapes = [tuple(s) for s in result.checked_shapes]
    assert len(shapes) == 3 and len({s[0] for s in shapes}) == 3, shapes
    if dynamic == "shape":
        assert len({s[2] for s in shapes}) == 3 and len({s[3] for s in shapes}) == 2, shapes
    else:
        assert {s[2:] for s in shapes} == {(64, 96)}
    assert result.rel_diff <= TOLERANCE[fmt]
    expected = (-1, 3, -1, -1) if dynamic == "shape" else (-1, 3, 64, 96)
    assert tuple(result.input_shape) == expected
    meta = json.loads(open(result.path + ".json").read())
    assert meta["input_shape"] == list(expected) and meta["dynamic"] == dynamic
    assert meta["preprocessing"]["image_size"] == [64, 96]
    if fmt == "MINDIR":
        assert mindir_input_shape(result.path) == expected
    else:
        from coat_ms.onnx_session import onnx_input_shape, open_session
        assert onnx_input_shape(open_session(result.path)) == expected
    fourth = example_input(4, (32, 64) if dynamic == "shape" else (64, 96), seed=9)
    got = run_file(result.path, fmt, fourth)
    assert relative_diff(got, reference_output(model.with_backend("stock"), ms.Tensor(fourth)))[1] <= TOLERANCE[fmt]
    if dynamic == "shape":
        with pytest.raises(Exception, match="could not be loaded and run|Reshape"):
            run_file(result.path, fmt, example_input(1, (64, 80)))


def test_check_dynamic():
    assert check_dynamic(None, "ONNX") is None and check_dynamic("shape", "MINDIR") == "shape"
    with pytest.raises(ExportError, match="AIR"):
        check_dynamic("batch", "AIR")
    with pytest.raises(ExportError, match="unknown dynamic mode"):
        check_dynamic("height", "ONNX")


# ---------------------------------------------------------------------------------------------- CLI

def run_export(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "export.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_cli_air_refused_on_cpu(tmp_path):
    """export.py's exit-code contract, as a user's shell sees it: one error line, exit code 2."""
    proc = run_export("--model_name", "coat_lite_tiny", "--file_format", "AIR", "--file_name", tmp_path / "m")
    line = one_error_line(proc)
    assert "AIR" in line and "Ascend" in line
    assert os.listdir(tmp_path) == []


def test_cli_unwritable_and_missing_paths(tmp_path, in_process_cli):
    def error(*args):
        return refused(export_cli.main, "--model_name", *args)
    assert "cannot write" in error("coat_lite_tiny", "--file_name", "/proc/coat_export")
    assert "does not exist" in error("coat_lite_tiny", "--file_name", tmp_path / "no" / "m")
    assert "not found" in error("coat_lite_tiny", "--ckpt_file", tmp_path / "none.ckpt", "--file_name", tmp_path / "m")
    assert "unknown model" in error("coat_nano", "--file_name", tmp_path / "m")
    assert "without 'backend'" in error("coat_lite_tiny", "--file_name", tmp_path / "m",
                                        "--model_args", '{"backend": "cpu_kernels"}')
    assert os.listdir(tmp_path) == []


def test_cli_wrong_checkpoint_for_model(tmp_path, in_process_cli):
    """A coat_lite_tiny checkpoint given for coat_tiny: names/shapes do not match -> clear error, no file."""
    small = coat_ms.create_model("coat_lite_tiny", **NARROW["coat_lite_tiny"])
    ms.save_checkpoint(small, str(tmp_path / "lite.ckpt"))
    assert "does not match" in refused(export_cli.main, "--model_name", "coat_tiny", "--ckpt_file",
                                       tmp_path / "lite.ckpt", "--file_name", tmp_path / "m")
    assert sorted(os.listdir(tmp_path)) == ["lite.ckpt"]
