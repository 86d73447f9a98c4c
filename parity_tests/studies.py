"""The parity studies, each returning plain results that tests assert on and the report prints.

forward_study   taps of one forward pass (variant, image size, batch, MindSpore mode)
grad_study      d(cross-entropy)/d(every parameter) and d/d(input)
step_study      one AdamW step: loss and every updated weight
mindcv_study    mindcv 0.3.0's CoaT vs coat_ms(align_corners=True, cpe_residual=False)
(image_path.image_study: real photos -> logits through each framework's evaluation path)
"""
import dataclasses
import time

import numpy as np

from . import harness, metrics


@dataclasses.dataclass
class Study:
    kind: str                 # forward | grad | step | mindcv | image
    variant: str
    label: str                # e.g. "224 b2 graph"
    comparisons: list         # metrics.Comparison, depth / parameter order
    seconds: float = 0.0
    notes: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)
    counted: bool = True      # False: shown for information, not part of pass/fail

    @property
    def passed(self):
        return all(c.passed for c in self.comparisons) and self.extra.get("ok", True)

    @property
    def failed_names(self):
        return metrics.failures(self.comparisons)


def forward_study(variant, img_size=224, batch=2, mode="graph", seed=0, pair=None):
    t0 = time.time()
    pair = pair or harness.build_pair(variant, img_size, seed)
    x = pair.inputs(batch)
    ref = pair.torch_forward_taps(x)
    got = pair.ms_forward_taps(x, mode)
    comps = metrics.compare_all(ref, got, metrics.FORWARD_RTOL, names=pair.tap_names)
    return Study("forward", variant, f"{img_size} b{batch} {mode}", comps, time.time() - t0,
                 notes=[f"weights via {pair.weights_via}"])


def grad_study(variant, img_size=224, batch=2, mode="pynative", seed=0, pair=None):
    t0 = time.time()
    pair = pair or harness.build_pair(variant, img_size, seed)
    x, y = pair.inputs(batch), pair.labels(batch)
    loss_pt, gx_pt, g_pt = harness.torch_loss_grads(pair.torch_model, x, y)
    loss_ms, gx_ms, g_ms = harness.ms_loss_grads(pair.ms_model, x, y, mode)
    if set(g_pt) != set(g_ms):
        raise RuntimeError(f"parameter sets differ: torch-only {sorted(set(g_pt) - set(g_ms))[:5]}, "
                           f"mindspore-only {sorted(set(g_ms) - set(g_pt))[:5]}")
    comps = [metrics.compare("loss", np.float64(loss_pt), np.float64(loss_ms), metrics.GRAD_RTOL),
             metrics.compare("input", gx_pt, gx_ms, metrics.GRAD_RTOL)]
    comps += metrics.compare_all(g_pt, g_ms, metrics.GRAD_RTOL, names=list(g_pt))
    tied = [n for n in g_pt if n.startswith(("cpe", "crpe")) or ".mlp2." in n]
    return Study("grad", variant, f"{img_size} b{batch} {mode}", comps, time.time() - t0,
                 notes=[f"{len(g_pt)} parameter tensors; {len(tied)} of them tied (cpe/crpe/mlp2-4: compared as "
                        f"the sum over every use, which both frameworks accumulate in one parameter)"],
                 extra=dict(grads=(g_pt, g_ms)))


def step_study(variant, img_size=224, batch=2, mode="pynative", seed=0, kind="adamw", grads=None):
    """One optimizer step from the same weights and batch.

    A tensor passes when max|w_ms - w_pt| / max|w_pt| <= 1e-5, or when every element over that bound
    is explained by Adam's amplification of the measured gradient difference (see harness.step_excess).
    """
    t0 = time.time()
    pair = harness.build_pair(variant, img_size, seed)
    x, y = pair.inputs(batch), pair.labels(batch)
    w0 = pair.ms_params()
    if grads is None:
        _, _, g_pt = harness.torch_loss_grads(pair.torch_model, x, y)
        _, _, g_ms = harness.ms_loss_grads(pair.ms_model, x, y, mode)
    else:
        g_pt, g_ms = grads
    loss_pt, w_pt = harness.torch_adamw_step(pair.torch_model, x, y)
    loss_ms, w_ms = harness.ms_adamw_step(pair.ms_model, x, y, kind, mode)
    comps = [metrics.compare("loss", np.float64(loss_pt), np.float64(loss_ms), metrics.STEP_RTOL)]
    comps += metrics.compare_all(w_pt, w_ms, metrics.STEP_RTOL, names=list(w_pt))
    flagged, unexplained = [], []
    for c in comps[1:]:
        if c.passed:
            continue
        rows = harness.step_excess(w_pt[c.name], w_ms[c.name], w0[c.name], g_pt[c.name], g_ms[c.name])
        for r in rows:
            r["tensor"] = c.name
        flagged += rows
        if all(r["explained"] for r in rows):
            c.explained = True  # every element over the tolerance is within its derived bound
        else:
            unexplained.append(c.name)
    opt = {"adamw": "mindspore.experimental.optim.AdamW",
           "adamweightdecay": "nn.AdamWeightDecay (lr, eps, wd rescaled for step 1)"}[kind]
    cfg = harness.ADAMW
    return Study("step", variant, f"{img_size} b{batch} {mode} {kind}", comps, time.time() - t0,
                 notes=[f"{opt} vs torch.optim.AdamW, lr={cfg['lr']}, betas={cfg['betas']}, eps={cfg['eps']}, "
                        f"weight_decay={cfg['weight_decay']}"],
                 extra=dict(flagged=flagged, unexplained=unexplained, ok=not unexplained))


def mindcv_study(variant, img_size=224, batch=2, seed=0):
    """mindcv 0.3.0 (reference here) vs coat_ms in its mindcv mode, both with the same weights.

    mindcv differs from the official model twice: align_corners=True interpolation in the parallel
    blocks, and a serial block computing x + attn(norm1(cpe(x))) (official: x = cpe(x) first).
    coat_ms built with align_corners=True, cpe_residual=False must reproduce it at every tap.
    """
    t0 = time.time()
    pt = harness.build_torch(variant, img_size, seed)
    ours = harness.build_ms(variant, align_corners=True, cpe_residual=False)
    params, how = harness.torch_to_ms_params(pt.state_dict(), variant, list(ours.parameters_dict()))
    harness.load_params(ours, params, f"{variant} weights via {how}")
    pair = harness.Pair(variant, img_size, seed, pt, ours, harness.arch_of(variant)[2], how)
    x = pair.inputs(batch)
    got = pair.ms_forward_taps(x, "pynative")
    ref = harness.mindcv_taps(harness.build_mindcv(variant, img_size, ours), x, pair.tap_names)
    study = Study("mindcv", variant, f"mindcv as released, {img_size} b{batch}",
                  metrics.compare_all(ref, got, metrics.FORWARD_RTOL, names=pair.tap_names), time.time() - t0,
                  notes=["coat_ms built with align_corners=True, cpe_residual=False (mindcv's interpolation and "
                         "serial-block residual)"])
    return (study,)
