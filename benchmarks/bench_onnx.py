"""The ONNX Runtime rows of the benchmark (benchmarks/bench.py): the files, and the worker that times them.

Per model, before its timed rounds, in child processes of their own:

* ``onnx-coat_ms``: our ONNX file, written and verified by ``coat_ms.export.export_model`` (what export.py
  writes) with a dynamic batch, so one file serves every batch size;
* ``onnx-timm``: timm's own ONNX export of the same variant (``timm.utils.onnx.onnx_export``: torch.onnx,
  opset 17, dynamic batch), the anchor of our file;
* ``onnx-int8``: our file quantized by ``coat_ms.quantize`` (what ``export.py --quantize int8`` writes),
  calibrated on 32 photo crops (coat_ms.datasets.photos) at the model's 224 preprocessing.

All three run in ONNX Runtime on the CPU with the same session options (all graph optimisations,
intra-op threads = the CPU count). Weights are random (seeded): speed does not depend on them.
"""
import os
import subprocess
import sys
import time

ONNX_FRAMEWORKS = ("onnx-coat_ms", "onnx-timm", "onnx-int8")
IMAGE = 224


def onnx_file(folder, framework, model_name):
    return os.path.join(folder, f"{framework}_{model_name}.onnx")


def prepare_coat_ms(model_name, folder):
    """Child side: our verified ONNX (dynamic batch) and its INT8 version."""
    import mindspore as ms

    import coat_ms
    from coat_ms.datasets import write_photo_crops_imagefolder
    from coat_ms.export import export_model
    from coat_ms.quantize import quantize_export

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    model = coat_ms.create_model(model_name, backend="stock")
    model.set_train(False)
    path = onnx_file(folder, "onnx-coat_ms", model_name)
    print(export_model(model, path, "ONNX", batch_size=1, image_size=(IMAGE, IMAGE), dynamic="batch").summary())
    photos = os.path.join(folder, "photos")
    write_photo_crops_imagefolder(photos, per_class=(2, 1))
    result = quantize_export(path, os.path.join(photos, "train"), calib_size=32, min_agreement=0.0)
    print(result.summary())
    os.replace(result.path, onnx_file(folder, "onnx-int8", model_name))


def prepare_timm(model_name, folder):
    """Child side: timm's own ONNX export (opset 17, dynamic batch)."""
    import timm
    import torch
    from timm.utils.onnx import onnx_export

    torch.manual_seed(0)
    model = timm.create_model(model_name).eval()
    onnx_export(model, onnx_file(folder, "onnx-timm", model_name), torch.randn(1, 3, IMAGE, IMAGE), opset=17,
                check=True)


def prepare_files(model_name, folder, env, log):
    """Write the three files of ``model_name`` into ``folder`` (two child processes); returns {framework: error}."""
    errors = {}
    for side, frameworks in (("coat_ms", ("onnx-coat_ms", "onnx-int8")), ("timm", ("onnx-timm",))):
        log(f"[{model_name}] preparing the {side} ONNX file(s) ...")
        start = time.perf_counter()
        code = f"from benchmarks.bench_onnx import prepare_{side}; prepare_{side}({model_name!r}, {folder!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln][-1:] or ["no output"]
            for f in frameworks:
                errors[f] = f"preparing the file failed: {tail[0][:300]}"
            log(f"[{model_name}] {side} ONNX FAILED: {tail[0][:300]}")
        else:
            log(f"[{model_name}] {side} ONNX ready in {time.perf_counter() - start:.0f} s")
    return errors


class OrtWorker:
    """Times one ONNX file in ONNX Runtime (a benchmark worker: ``call(batch)`` -> seconds)."""

    def __init__(self, framework, model_name, task, folder):
        import numpy as np

        from coat_ms.onnx_session import open_session

        if task != "infer":
            raise ValueError("ONNX files are timed for inference only")
        self.np = np
        self.session = open_session(onnx_file(folder, framework, model_name), threads=os.cpu_count())
        self.input_name = self.session.get_inputs()[0].name
        self.inputs = {}

    def call(self, batch):
        if batch not in self.inputs:
            rng = self.np.random.default_rng(batch)
            self.inputs[batch] = rng.standard_normal((batch, 3, IMAGE, IMAGE)).astype(self.np.float32)
        start = time.perf_counter()
        self.session.run(None, {self.input_name: self.inputs[batch]})
        return time.perf_counter() - start


def cpu_has_bf16():
    """True when the CPU has bfloat16 instructions (AVX512-BF16 or AMX-BF16): where timm's bf16 autocast row runs."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
