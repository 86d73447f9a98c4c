"""Mixed precision against float32, with timm's weights and real photos.

amp_study(variant)  coat_ms float32 logits vs the same weights at mindcv's O1 / O2 / O3 (train.py's call, on
                    MindSpore's operators in GRAPH_MODE) and at MindSpore's own O2; timm's float16 autocast
                    against timm float32 as the reference figure; gradients at O2 with a fixed loss scale
                    (unscaled, as the optimizer sees them; PyNative) against float32, cosine per parameter tensor.
amp_study_in_child  the same in a fresh process (what the report and the slow test run: memory comes back).

Inputs: crops of scikit-learn's two sample photos, through timm's own evaluation transform for the variant.
Weights: timm's model with seeded random weights (no pretrained file can be downloaded here), converted with
the product's converter (harness.build_pair).
"""
import dataclasses
import time

import mindspore as ms
import numpy as np
import torch
from mindspore import nn

from coat_ms.amp import apply_amp
from coat_ms.checkpoint import load_state
from coat_ms.train.engine import LossInFloat32

from . import harness

LEVELS = ("O1", "O2", "O3")
O2_MIN_COSINE = 0.999          # the bar for logits at O2
# Per parameter tensor at O2, loss scale 1024: 0.99, or timm's own float16 autocast figure for the same tensor
# where that is lower. A gradient summed from many cancelling terms keeps less in float16 in either framework:
# coat_tiny's cls_token1 (its stage-1 class token, seen only through stage-1 attention) reached cosine 0.9831
# under timm's autocast and 0.9866 in coat_ms (report of 2026-12-03), so a fixed 0.99 asked more than fp16 gives.
GRAD_MIN_COSINE = 0.99
LOSS_SCALE = 1024.0


def photo_batch(pt_model, n=4, seed=0):
    """``n`` crops (various boxes and aspect ratios) of scikit-learn's sample photos through timm's eval
    transform for ``pt_model``: (n, 3, H, W) float32."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=pt_model))
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    batch = []
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        batch.append(transform(photo.crop((left, top, left + cw, top + ch))).numpy())
    return np.stack(batch).astype(np.float32)


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float(np.array_equal(a, b))


@dataclasses.dataclass
class LogitRow:
    what: str           # "coat_ms O2 (mindcv)", "timm autocast float16", ...
    cosine: float
    max_rel: float      # max|amp - fp32| / max|fp32|
    top1_agree: float   # fraction of images whose arg-max is unchanged
    bar: float = None   # the cosine it must reach (None: informational)

    @property
    def passed(self):
        return self.bar is None or self.cosine >= self.bar


def logit_row(what, got, ref, bar=None):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return LogitRow(what, cosine(got, ref), float(np.abs(got - ref).max() / np.abs(ref).max()),
                    float((got.argmax(1) == ref.argmax(1)).mean()), bar)


def stock_model(pair, variant):
    """A coat_ms model on MindSpore's operators holding the pair's weights (what Ascend/GPU run)."""
    model = harness.build_ms(variant, backend="stock")
    params = {n: ms.Parameter(ms.Tensor(p.asnumpy()), name=n) for n, p in pair.ms_model.parameters_dict().items()}
    load_state(model, params, strict=True, source=f"{variant} parity weights")
    return model


def amp_logits(pair, variant, x, level, api="mindcv"):
    model = stock_model(pair, variant)
    if api == "mindcv":
        apply_amp(model, level)
    else:
        model = ms.amp.auto_mixed_precision(model, level)
    model.set_train(False)
    with harness.ms_mode("graph"):
        return model(ms.Tensor(x)).asnumpy().astype(np.float32)


class _ScaledLoss(nn.Cell):
    """loss * scale, with the loss taken in float32 as train.py takes it (engine.LossInFloat32)."""

    def __init__(self, model, scale):
        super().__init__(auto_prefix=False)
        self.loss = LossInFloat32(model, nn.CrossEntropyLoss())
        self.scale = scale

    def construct(self, x, y):
        return self.loss(x, y) * self.scale


def grads(model, x, y, scale=1.0, mode="pynative"):
    """{name: d loss / d parameter} (unscaled); PyNative by default, where memory is returned as tensors die
    (a full-size GRAPH_MODE gradient graph holds ~5 GB on CPU; train.py's compiled O2 step is tests/test_amp.py's)."""
    params = model.trainable_params()
    fn = ms.grad(_ScaledLoss(model, scale), grad_position=None, weights=params)
    with harness.ms_mode(mode):
        got = fn(ms.Tensor(x), ms.Tensor(y))
    return {p.name: g.asnumpy().astype(np.float64) / scale for p, g in zip(params, got)}


@dataclasses.dataclass
class AmpStudy:
    variant: str
    rows: list                      # LogitRow
    grad_cosines: dict              # parameter name -> cosine at O2 vs float32
    seconds: float
    batch: int
    grad_ref_cosines: dict = dataclasses.field(default_factory=dict)  # the same for timm's float16 autocast
    kind: str = "amp"
    counted: bool = True

    @property
    def label(self):
        return f"224 b{self.batch}: logits GRAPH_MODE, gradients PyNative at loss scale {LOSS_SCALE:g}"

    @property
    def min_grad_cosine(self):
        return min(self.grad_cosines.values()) if self.grad_cosines else None

    def grad_bar(self, name):
        return min(GRAD_MIN_COSINE, self.grad_ref_cosines.get(name, GRAD_MIN_COSINE))

    @property
    def passed(self):
        return all(r.passed for r in self.rows) and not self.failed_grads

    @property
    def failed_grads(self):
        return [n for n, c in self.grad_cosines.items() if c < self.grad_bar(n)]

    @property
    def failed_names(self):
        return [r.what for r in self.rows if not r.passed] + self.failed_grads


def amp_study(variant, batch=4, seed=0, pair=None, levels=LEVELS, with_grads=True):
    t0 = time.time()
    pair = pair or harness.build_pair(variant, 224, seed)
    x = photo_batch(pair.torch_model, batch, seed)
    with torch.no_grad():
        pt32 = pair.torch_model(torch.from_numpy(x)).numpy()
        with torch.autocast("cpu", dtype=torch.float16):
            pt16 = pair.torch_model(torch.from_numpy(x)).float().numpy()
    ref = amp_logits(pair, variant, x, "O0")
    rows = [logit_row("timm autocast float16 vs timm float32 (reference)", pt16, pt32)]
    for level in levels:
        rows.append(logit_row(f"coat_ms {level} (mindcv, train.py) vs coat_ms float32",
                              amp_logits(pair, variant, x, level), ref, O2_MIN_COSINE if level == "O2" else None))
    rows.append(logit_row("coat_ms O2 (mindspore.amp) vs coat_ms float32",
                          amp_logits(pair, variant, x, "O2", api="mindspore"), ref, O2_MIN_COSINE))
    grad_cosines = {}
    if with_grads:
        y = pair.labels(batch)
        g32 = grads(stock_model(pair, variant), x, y)
        g16 = grads(apply_amp(stock_model(pair, variant), "O2"), x, y, LOSS_SCALE)
        grad_cosines = {n: cosine(g16[n], g32[n]) for n in g32}
        grad_ref_cosines = timm_autocast_grad_cosines(pair.torch_model, x, y)
    return AmpStudy(variant, rows, grad_cosines, time.time() - t0, batch, grad_ref_cosines)


def timm_autocast_grad_cosines(pt_model, x, y):
    """{name: cosine} of timm's gradients under float16 autocast (at LOSS_SCALE, unscaled) against its float32
    gradients: the reference figure per tensor."""
    labels = np.asarray(y)
    g32 = harness.torch_loss_grads(pt_model.eval(), x, labels)[2]
    g16 = harness.torch_loss_grads(pt_model, x, labels, autocast=torch.float16, scale=LOSS_SCALE)[2]
    return {n: cosine(g16[n], g32[n]) for n in g32}


def amp_study_in_child(variant, **kw):
    """amp_study in a fresh process: MindSpore keeps every compiled graph and its memory pool for the life of the
    process, and six full-size float16/float32 graphs per variant would add up (coat_lite_mini's study was killed
    by the OOM killer at 21 GB inside the report's process); the child gives it all back when it ends."""
    import multiprocessing  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(amp_study, variant, **kw).result()


def markdown_lines(study):
    lines = [f"### Mixed precision ({study.label})", "",
             "| logits | cosine | max rel | top-1 agreement | bar | pass |", "|---|---|---|---|---|---|"]
    for r in study.rows:
        bar = f">= {r.bar}" if r.bar is not None else "-"
        lines.append(f"| {r.what} | {r.cosine:.6f} | {r.max_rel:.2e} | {r.top1_agree:.0%} | {bar} | "
                     f"{'yes' if r.passed else '**NO**'} |")
    if study.grad_cosines:
        worst = sorted(study.grad_cosines.items(), key=lambda kv: kv[1])[:3]
        lines += ["", f"Gradients at O2 (loss scale {LOSS_SCALE:g}, unscaled) vs float32, {len(study.grad_cosines)} "
                      f"tensors: min cosine {study.min_grad_cosine:.6f} (bar per tensor: {GRAD_MIN_COSINE}, or timm's "
                      f"own float16 autocast figure where lower); lowest: " +
                  ", ".join(f"{n} {c:.6f} (timm autocast {study.grad_ref_cosines.get(n, float('nan')):.6f}, "
                            f"{'ok' if c >= study.grad_bar(n) else '**NO**'})" for n, c in worst) + "."]
    return lines
