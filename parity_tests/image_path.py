"""image -> logits: coat_ms's whole evaluation path against timm's, on real photos, with the same weights.

For one variant, timm's model gets seeded random weights (harness.build_torch; the head scaled by 30 so
that the probabilities are peaked and the logits react to every pixel), is saved as a .pth and
converted by the product's CLI (``python -m convert``), so the checkpoint carries the record a user's
converted file carries.  Every photo of parity_tests/photos.py (24 files: many sizes and aspect
ratios; RGB, greyscale, palette, alpha, CMYK, 16-bit) then goes

* through timm: its loader (``Image.open(f).convert('RGB')``, as ``timm.data.ImageDataset``),
  ``resolve_data_config({}, model=model)`` + ``create_transform(**cfg)``, the model;
* through coat_ms's evaluation path, the one validate.py and predict use: ``model_from_checkpoint``
  (the weights and their record), ``weights_preprocessing`` (the record's preprocessing), the eval
  pipeline ``coat_ms.data.pipeline.eval_dataset`` (PIL decoding in workers, resize and crop,
  normalise), the model in GRAPH_MODE on batches padded to one compiled size;
* optionally (``deploy=True``) through the MINDIR that export.py writes from the same checkpoint and
  the predict CLI on it (``--mindir``), and the predict CLI on the checkpoint (``--ckpt_path``).

Bounds: input tensors max |coat_ms - timm| <= 1e-6 (normalised units; PIL's resampling is the same
code, so what is left is float32 rounding of the normalisation: 2.4e-7 steps); logits max |diff| /
max |timm| <= 2e-5 per photo (the forward bound of the layer-by-layer study); predict's printed
probabilities |p - p_timm| <= 2 d p_timm + 1e-7 with d = 2e-5 max |logits| of the photo (a logit
bound d moves a log-probability by at most 2 d).
"""
import json
import os
import tempfile
import time

import numpy as np

from . import harness, metrics
from .photos import write_photos

INPUT_ATOL = 1e-6
LOGITS_RTOL = metrics.FORWARD_RTOL
BATCH = 8
HEAD_SCALE = 30.0


def absolute(name, ref, got, tol):
    """A Comparison whose pass/fail is on max |got - ref| (its ``rel`` column holds that absolute value)."""
    c = metrics.compare(name, ref, got, tol)
    c.rel = c.max_abs
    return c


def timm_path(model, paths):
    """(inputs, logits) of each photo through timm's loader, transform and model."""
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        inputs = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        logits = torch.cat([model(inputs[i:i + BATCH]) for i in range(0, len(paths), BATCH)])
    return inputs.numpy(), logits.numpy()


def coat_ms_path(ckpt, paths):
    """(inputs, logits, preprocessing) of each photo through coat_ms's evaluation path (see module doc)."""
    from coat_ms.factory import model_from_checkpoint
    from coat_ms.data.files import ImageList
    from coat_ms.data.pipeline import eval_dataset
    from coat_ms.data.transforms import weights_preprocessing
    from coat_ms.evaluation import cell_predictor, run_padded

    with harness.ms_mode("graph"):
        model, meta = model_from_checkpoint(ckpt)
        pre = weights_preprocessing(meta, model)
        images = ImageList("", [], [os.path.abspath(p) for p in paths], np.zeros(len(paths), np.int32))
        dataset, _ = eval_dataset(images, pre, BATCH, workers=2)
        predict = cell_predictor(model)
        inputs, logits = [], []
        for image, _, bad in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
            if bad.any():
                raise RuntimeError(f"coat_ms could not read {int(bad.sum())} of the photos")
            inputs.append(image)
            logits.append(run_padded(predict, image.astype(np.float32), BATCH))
    return np.concatenate(inputs), np.concatenate(logits), pre


def softmax(logits):
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def predicted(json_path, paths):
    """{photo path: [(class index, probability)]} from predict's --json output."""
    with open(json_path, encoding="utf-8") as f:
        results = json.load(f)["results"]
    by_path = {os.path.realpath(r["path"]): [(int(t["label"]), t["prob"]) for t in r["topk"]] for r in results}
    return [by_path[os.path.realpath(p)] for p in paths]


def probability_rows(tool, names, ref_logits, topk):
    """Comparisons of predict's top-k probabilities with timm's softmax, each against its derived bound; the
    classes shown must be timm's top k (up to ties within the bound)."""
    rows = []
    for name, logits, p_ref, top in zip(names, ref_logits, softmax(ref_logits), topk):
        d = LOGITS_RTOL * float(np.max(np.abs(logits)))
        labels = [k for k, _ in top]
        got, want = np.array([p for _, p in top]), p_ref[labels]
        excess = np.abs(got - want) - (2 * d * want + 1e-7)
        kth = np.sort(p_ref)[-len(labels)]
        c = metrics.compare(f"{tool} {name}", want, got, 0.0)
        c.rel = float(max(excess.max(), 0.0))   # 0 when every probability is within its bound
        if np.any(want < kth - (2 * d * kth + 1e-7)):   # a class timm does not rank in its top k
            c.rel = float("inf")
        rows.append(c)
    return rows


def describe_files(paths):
    """{file name: 'W x H MODE FORMAT'} as PIL reads each file."""
    from PIL import Image
    out = {}
    for p in paths:
        with Image.open(p) as im:
            out[os.path.basename(p)] = f"{im.size[0]}x{im.size[1]} {im.mode} {im.format}"
    return out


def image_study(variant, seed=0, deploy=False, workdir=None):
    """The image -> logits study of ``variant`` (a parity_tests.studies.Study of kind 'image')."""
    import torch

    from convert.cli import main as convert_main

    from .studies import Study
    t0 = time.time()
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"image_path_{variant}_")
    photos = os.path.join(workdir, "photos")
    paths = write_photos(photos, classes=0)
    names = [os.path.basename(p) for p in paths]
    reference = harness.build_torch(variant, 224, seed)
    with torch.no_grad():   # a larger head: peaked probabilities and logits that react to every input pixel
        reference.head.weight.mul_(HEAD_SCALE)
    pth, ckpt = os.path.join(workdir, f"{variant}.pth"), os.path.join(workdir, f"{variant}.ckpt")
    torch.save(reference.state_dict(), pth)
    if convert_main(["--src", pth, "--out", ckpt]) != 0:
        raise RuntimeError(f"python -m convert failed on {pth}")

    ref_inputs, ref_logits = timm_path(reference, paths)
    inputs, logits, pre = coat_ms_path(ckpt, paths)
    comps = [absolute(f"input {n}", r, g, INPUT_ATOL) for n, r, g in zip(names, ref_inputs, inputs)]
    comps += [metrics.compare(f"logits {n}", r, g, LOGITS_RTOL) for n, r, g in zip(names, ref_logits, logits)]
    notes = [f"{len(paths)} photos; weights: timm {variant} (seed {seed}) -> .pth -> python -m convert; coat_ms "
             f"evaluates them {pre.describe()}"]
    if deploy:
        comps += deployed_rows(ckpt, paths, names, ref_logits, workdir)
        notes.append("deploy: export.py MINDIR (batch 1) from the checkpoint, predict --mindir and --ckpt_path")
    study = Study("image", variant, f"{len(paths)} photos" + (" + MINDIR + predict" if deploy else ""), comps,
                  time.time() - t0, notes=notes, extra=dict(photos=describe_files(paths)))
    if own:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return study


def deployed_rows(ckpt, paths, names, ref_logits, workdir):
    """MINDIR logits (relative 2e-5) and predict's probabilities (derived bound) for every photo."""
    import mindspore as ms
    from mindspore import nn

    import export as export_cli
    from coat_ms import predict as predict_cli
    from coat_ms.data.files import ImageList
    from coat_ms.data.pipeline import eval_dataset
    from coat_ms.inference import read_sidecar
    from coat_ms.data.transforms import preprocessing

    mindir = os.path.join(workdir, "model.mindir")
    if export_cli.main(["--ckpt_file", ckpt, "--file_name", mindir, "--file_format", "MINDIR"]) != 0:
        raise RuntimeError("export.py failed")
    pre = preprocessing(read_sidecar(mindir)["preprocessing"])       # what predict --mindir will use
    images = ImageList("", [], [os.path.abspath(p) for p in paths], np.zeros(len(paths), np.int32))
    dataset, _ = eval_dataset(images, pre, 1, workers=2)
    cell = nn.GraphCell(ms.load(mindir))
    logits = np.concatenate([cell(ms.Tensor(image)).asnumpy()
                             for image, _, _ in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    rows = [metrics.compare(f"MINDIR logits {n}", r, g, LOGITS_RTOL) for n, r, g in zip(names, ref_logits, logits)]
    for tool, source in (("predict --mindir", ["--mindir", mindir]), ("predict --ckpt_path", ["--ckpt_path", ckpt])):
        out = os.path.join(workdir, f"predict_{source[0].strip('-')}.json")
        if predict_cli.main([*paths, *source, "--topk", "5", "--json", out]) != 0:
            raise RuntimeError(f"{tool} failed")
        rows += probability_rows(tool, names, ref_logits, predicted(out, paths))
    return rows
