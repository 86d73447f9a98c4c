"""One training step of a shipped recipe: coat_ms's training cell against the same step written with torch.

MindSpore side, the product's own path: the recipe YAML through ``coat_ms.config``, the optimizer, its
weight-decay groups and lr schedule from ``engine.build_optimizer_and_schedule``, the loss, loss scale,
clipping and EMA from ``engine.build_train_step`` (mindcv's TrainStep), fed a batch mixed by mindcv's
``Mixup`` (what the recipe's loader applies).

torch side: timm's CoaT with the same weights; timm's ``Mixup`` with the recipe's label smoothing (its soft
target) on the same raw batch and the same numpy seed; timm's ``SoftTargetCrossEntropy``; ``GradScaler`` (dynamic
loss scale) or loss * S then grad / S (fixed); timm's optimizer factory (``create_optimizer_v2``,
``filter_bias_and_bn=True``) with the lr of timm's ``CosineLRScheduler`` at the step; timm's ``ModelEmaV3``.

Where mindcv's definition differs from timm's, the torch side computes mindcv's (stated in the notes):
  * EMA decay: mindcv warms it up as ema_decay * (1 - exp(-t / 2000)) (t: the step number); timm's
    ModelEmaV3 warm-up is 1 - (1 + t / gamma)^-power.  ModelEmaV3 gets mindcv's value at t as its decay.
  * Gradient clipping: mindcv scales by clip / max(norm, clip); torch's clip_grad_norm_ by
    clip / (norm + 1e-6), capped at 1.  The torch side scales by mindcv's factor.
  * AdamW: mindcv's AdamW (w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w), eps 1e-8: create_optimizer
    passes its eps only to RMSProp) equals torch.optim.AdamW, the class timm's factory returns for "adamw".
  * Lion: mindcv's Lion equals timm's (w *= 1 - lr * wd; w -= lr * sign(b1 * m + (1 - b1) * g);
    m = b2 * m + (1 - b2) * g; betas 0.9 / 0.99 in both).
  * Label smoothing: timm smooths the mixed target in Mixup, mindcv in the loss; both give
    target * (1 - s) + s / C.
  * timm's ModelEmaV3 by default walks ``state_dict()``, which lists a tied CoaT tensor (cpe, crpe, mlp2-4)
    once per use and so averages it several times per step; ``exclude_buffers=True`` walks each parameter
    once (CoaT has no buffers), which is what the reference needs.

The step is step ``STEP`` of the schedule with ``STEPS_PER_EPOCH`` steps per epoch (a smaller dataset than
ImageNet, so that the step lies after the warm-up of lr, inside the warm-up of mindcv's EMA decay and with
Adam's bias corrections away from 1).  Both sides start from the same state as at that step: optimizer
moments drawn at the scale of the batch's gradient (so that the update is not Adam's step-1 sign of the
gradient, which amplifies rounding around zero), the EMA weights a little away from the weights, and a
dynamic loss scale whose growth window completes on this step (so the scale doubles on both sides).
"""
import dataclasses
import math
import os
import time

import mindspore as ms
import numpy as np
import torch

from . import harness, metrics
from .studies import Study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = {"coat_lite_tiny": "configs/coat_lite_tiny_ascend.yaml",   # AdamW, fixed loss scale 1024
           "coat_tiny": "configs/coat_tiny_ascend.yaml"}             # Lion, EMA, dynamic loss scale 4096
STEPS_PER_EPOCH = 50
STEP = 1500                 # 1-based: the optimizer's global_step is STEP - 1 before it
EXACT_TOL = 1e-6            # inputs, soft targets, lr: what a float32 rounding may leave


def recipe_settings(path, **overrides):
    """The recipe as train.py resolves it, with what a CPU parity run must change (device, fp32 AMP, batch)."""
    from coat_ms.config import load_yaml, merged
    path = os.path.join(ROOT, path) if not os.path.isabs(path) else path
    return merged(load_yaml(path), source=path, **dict(dict(device_target="CPU", distribute=False, amp_level="O0"),
                                                       **overrides))


def mix_seed(kind, start=0):
    """The first numpy seed >= start for which Mixup(batch mode, prob 1, switch 0.5) picks ``kind``."""
    for seed in range(start, start + 1000):
        rng = np.random.RandomState(seed)
        rng.rand()
        if (rng.rand() < 0.5) == (kind == "cutmix"):
            return seed
    raise RuntimeError("no seed found")


def mixed_batches(cfg, x, labels, num_classes, seed):
    """(mindcv images, mindcv target) and (timm images, timm smoothed target) from the same raw batch and seed."""
    from mindcv.data.mixup import Mixup as MindcvMixup
    from timm.data import Mixup as TimmMixup
    common = dict(mixup_alpha=cfg["mixup"], cutmix_alpha=cfg["cutmix"], cutmix_minmax=None, prob=cfg["cutmix_prob"],
                  switch_prob=0.5, mode="batch", num_classes=num_classes)
    np.random.seed(seed)
    x_ms, t_ms = MindcvMixup(label_smoothing=0.0, **common)(x.copy(), labels.copy())  # as mindcv's loader
    np.random.seed(seed)
    x_pt = torch.from_numpy(x.copy())
    t_pt = TimmMixup(label_smoothing=cfg["label_smoothing"], **common)(x_pt, torch.from_numpy(labels).long())[1]
    return (x_ms, t_ms), (x_pt.numpy().copy(), t_pt.numpy().copy())


def timm_lr_schedule(cfg, steps_per_epoch, world_size=8):
    """timm's CosineLRScheduler set up as mindcv's cosine_decay + linear warm-up of the recipe (per step)."""
    from timm.scheduler import CosineLRScheduler
    assert cfg["scheduler"] == "cosine_decay" and not cfg["lr_epoch_stair"] and not cfg["lr_scale_by_batch"]
    warmup, epochs = cfg["warmup_epochs"], cfg["epoch_size"]
    decay = cfg["decay_epochs"] or max(1, epochs - warmup)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    return CosineLRScheduler(opt, t_initial=decay * steps_per_epoch, lr_min=cfg["min_lr"],
                             warmup_t=warmup * steps_per_epoch, warmup_lr_init=cfg["lr"] * cfg["warmup_factor"],
                             warmup_prefix=True, cycle_limit=cfg["num_cycles"], cycle_decay=cfg["cycle_decay"],
                             t_in_epochs=False)


def mindcv_ema_decay(ema_decay, t):
    """mindcv TrainStep's EMA decay at its t-th update (float64)."""
    return ema_decay * (1.0 - math.exp(-t / 2000.0))


@dataclasses.dataclass
class StartState:
    """What both sides hold before step ``step``: optimizer moments, EMA weights, loss-scale counters."""
    step: int
    m: dict
    v: dict
    ema: dict
    loss_scale: float


def start_state(cfg, weights, grads, step, seed):
    """Moments drawn at the scale s of the batch's gradient (rms over every element): m ~ s N(0, 1),
    v ~ s^2 (0.5 + |N(0, 1)|)^2; EMA weights = weights + 0.1 std(weights) N(0, 1)."""
    rng = np.random.RandomState(seed + 300)
    s = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()) /
                  sum(g.size for g in grads.values()))
    s = s if math.isfinite(s) and s > 0 else 1.0  # an overflowing step: its update is skipped anyway
    m, v, ema = {}, {}, {}
    for name in sorted(weights):
        w = weights[name]
        m[name] = (s * rng.standard_normal(w.shape)).astype(np.float32)
        v[name] = (s * (0.5 + np.abs(rng.standard_normal(w.shape)))).astype(np.float32) ** 2
        ema[name] = (w + 0.1 * (float(w.std()) or 1.0) * rng.standard_normal(w.shape)).astype(np.float32)
    return StartState(step, m, v, ema, float(cfg["loss_scale"]))


# ------------------------------------------------------------------------------------------------ torch


def torch_step(model, cfg, x, target, lr, state_fn, weight_names):
    """The recipe's step in torch; returns dict(loss, weights, ema, loss_scale, grad_norm, clip_coef, state)."""
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    model.train()
    params = dict(model.named_parameters())
    kwargs = dict(betas=tuple(cfg["betas"])) if cfg["betas"] else {}
    opt = create_optimizer_v2(model, cfg["opt"], lr=lr, weight_decay=cfg["weight_decay"],
                              filter_bias_and_bn=cfg["weight_decay_filter"] == "norm_and_bias", **kwargs)
    loss = SoftTargetCrossEntropy()(model(torch.from_numpy(x)), torch.from_numpy(target))
    scale = float(cfg["loss_scale"])
    dynamic = cfg["loss_scale_type"] == "dynamic"
    if dynamic:
        window = cfg["scale_window"]
        scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_factor=cfg["scale_factor"],
                                      backoff_factor=1.0 / cfg["scale_factor"], growth_interval=window)
        scaler.load_state_dict(dict(scale=scale, growth_factor=cfg["scale_factor"],
                                    backoff_factor=1.0 / cfg["scale_factor"], growth_interval=window,
                                    _growth_tracker=window - 1))  # the window completes on this step
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        (loss * scale).backward()
        with torch.no_grad():
            for p in model.parameters():
                p.grad.mul_(1.0 / scale)
    grads = [p.grad for p in model.parameters()]
    # the start state is drawn at the scale of the gradient before clipping, so that clipping changes the step
    state = state_fn({n: p.grad.numpy().copy() for n, p in params.items()})
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    coef = 1.0
    if cfg["clip_grad"]:  # mindcv's definition: clip / max(norm, clip)
        coef = cfg["clip_value"] / max(norm, cfg["clip_value"])
        with torch.no_grad():
            for g in grads:
                g.mul_(coef)
    for name, p in params.items():
        slot = {"exp_avg": torch.from_numpy(state.m[name].copy())}
        if cfg["opt"] == "adamw":
            slot.update(step=torch.tensor(float(state.step - 1)), exp_avg_sq=torch.from_numpy(state.v[name].copy()))
        opt.state[p] = slot
    ema = None
    if cfg["ema"]:
        ema = ModelEmaV3(model, decay=mindcv_ema_decay(cfg["ema_decay"], state.step), exclude_buffers=True)
        with torch.no_grad():
            for name, p in ema.module.named_parameters():
                p.copy_(torch.from_numpy(state.ema[name]))
    skipped = False
    if dynamic:
        scaler.step(opt)  # skipped when the unscaled gradients hold inf / nan
        scaler.update()
        skipped = float(scaler.get_scale()) < scale
        scale = float(scaler.get_scale())
    else:
        opt.step()
    if ema is not None and not skipped:  # mindcv leaves the EMA alone on a skipped step (timm's train.py does not)
        ema.update(model)
    out = dict(loss=float(loss.detach()), weights={n: p.detach().numpy().copy() for n, p in params.items()},
               loss_scale=scale, grad_norm=norm, clip_coef=coef, state=state, skipped=skipped,
               decayed={n for n, p in params.items() for g in opt.param_groups
                        if g["weight_decay"] > 0 and any(p is q for q in g["params"])})
    if ema is not None:
        out["ema"] = {n: p.detach().numpy().copy() for n, p in ema.module.named_parameters()}
    assert set(out["weights"]) == set(weight_names), "torch and coat_ms parameter names differ"
    return out


# ------------------------------------------------------------------------------------------------ MindSpore


def ms_step(model, cfg, x, target, state, steps_per_epoch, mode):
    """The recipe's step through coat_ms's engine (optimizer, schedule, TrainStep) from ``state``."""
    from coat_ms.train import engine

    opt, schedule = engine.build_optimizer_and_schedule(cfg, model, steps_per_epoch, world_size=8)
    step = engine.build_train_step(cfg, model, opt, engine.resolve_amp(cfg, "CPU"))
    step.set_train(True)
    n = state.step
    opt.global_step.set_data(ms.Tensor([n - 1], ms.int32))
    for p, m in zip(opt.parameters, opt.moments1):
        m.set_data(ms.Tensor(state.m[p.name]))
    if cfg["opt"] == "adamw":
        for p, v in zip(opt.parameters, opt.moments2):
            v.set_data(ms.Tensor(state.v[p.name]))
        b1, b2 = (cfg["betas"] or (0.9, 0.999))
        opt.beta1_power.set_data(ms.Tensor([b1 ** (n - 1)], ms.float32))  # construct multiplies by beta first
        opt.beta2_power.set_data(ms.Tensor([b2 ** (n - 1)], ms.float32))
    if cfg["ema"]:
        step.updates.set_data(ms.Tensor(float(n - 1), ms.float32))
        for e, w in zip(step.ema_weight, step.weights_all):
            e.set_data(ms.Tensor(state.ema[w.name]))
    manager = step.loss_scaling_manager
    if manager is not None:  # DynamicLossScaleUpdateCell: grows when cur_iter - last_overflow_iter >= window
        manager.cur_iter.set_data(ms.Tensor(n, ms.int32))
        manager.last_overflow_iter.set_data(ms.Tensor(n - cfg["scale_window"], ms.int32))
    with harness.ms_mode(mode):
        loss = step(ms.Tensor(x), ms.Tensor(target))
    out = dict(loss=float(loss.asnumpy()), lr=float(np.float32(schedule[n - 1])), schedule=schedule,
               weights={p.name: p.asnumpy().copy() for p in model.trainable_params()},
               loss_scale=float(step.scale_sense.asnumpy()) if manager is not None else float(cfg["loss_scale"]),
               decayed={p.name for p, flag in zip(opt.parameters, opt.decay_flags) if flag})
    if cfg["ema"]:
        out["ema"] = {w.name: e.asnumpy().copy() for e, w in zip(step.ema_weight, step.weights_all)}
    return out


# ------------------------------------------------------------------------------------------------ the study


def recipe_step_study(variant, recipe=None, img_size=224, batch=2, mode="pynative", seed=0, mix="auto",
                      step=STEP, steps_per_epoch=STEPS_PER_EPOCH, num_classes=1000, reference_overrides=None,
                      **overrides):
    """One step of ``recipe`` (default: RECIPES[base variant]) on ``variant`` (a variant or tiny arch).

    ``mix``: "mixup" or "cutmix" picks the numpy seed that makes the recipe's Mixup do that ("auto": mixup
    for CoaT-Lite, cutmix for CoaT).  ``overrides`` are settings, e.g. clip_grad=True, clip_value=0.5.
    ``reference_overrides`` change the torch side only (the tests that show the study can fail).
    """
    t0 = time.time()
    base = harness.arch_of(variant)[0]
    recipe = recipe or RECIPES[base]
    cfg = recipe_settings(recipe, batch_size=batch, **overrides)
    assert not (cfg["drop_rate"] or cfg["drop_path_rate"]), "dropout would make the two steps differ at random"
    pair = harness.build_pair(variant, img_size, seed, num_classes=num_classes)
    x, labels = pair.inputs(batch), pair.labels(batch, num_classes)
    mix = ("cutmix" if pair.parallel_depth else "mixup") if mix == "auto" else mix
    (x_ms, t_ms), (x_pt, t_pt) = mixed_batches(cfg, x, labels, num_classes, mix_seed(mix, seed))
    sched = timm_lr_schedule(cfg, steps_per_epoch)
    lr_pt = sched._get_lr(step - 1)[0]
    w0 = pair.ms_params()
    names = list(w0)
    box = {}

    def state_fn(grads):
        box["state"] = start_state(cfg, pair.ms_params(), grads, step, seed)
        return box["state"]

    ref_cfg = recipe_settings(recipe, batch_size=batch, **dict(overrides, **(reference_overrides or {})))
    ref = torch_step(pair.torch_model, ref_cfg, x_pt, t_pt, lr_pt, state_fn, names)
    got = ms_step(pair.ms_model, cfg, x_ms, t_ms, box["state"], steps_per_epoch, mode)

    s = cfg["label_smoothing"]
    timm_lrs = [sched._get_lr(t)[0] for t in range(len(got["schedule"]))]
    comps = [metrics.compare("loss", np.float64(ref["loss"]), np.float64(got["loss"]), metrics.STEP_RTOL),
             metrics.compare(f"lr at step {step}", np.float64(lr_pt), np.float64(got["lr"]), EXACT_TOL),
             metrics.compare(f"lr schedule ({len(timm_lrs)} steps)", np.array(timm_lrs), np.array(got["schedule"]),
                             EXACT_TOL),
             metrics.compare("loss scale after the step", np.float64(ref["loss_scale"]),
                             np.float64(got["loss_scale"]), 0.0),
             metrics.compare(f"{mix} images", x_pt, x_ms, EXACT_TOL),
             metrics.compare("soft target (smoothed)", t_pt, t_ms * (1 - s) + s / num_classes, EXACT_TOL)]
    n_scalar = len(comps)
    comps += [metrics.compare(f"w {n}", ref["weights"][n], got["weights"][n], metrics.STEP_RTOL) for n in names]
    if cfg["ema"]:
        comps += [metrics.compare(f"ema {n}", ref["ema"][n], got["ema"][n], metrics.STEP_RTOL) for n in names]
    groups_ok = ref["decayed"] == got["decayed"]
    # how far the step moved each tensor (torch side), relative to its size: what the 1e-5 bound resolves
    moved = min(float(np.abs(ref["weights"][n] - w0[n]).max()) / (float(np.abs(w0[n]).max()) or 1.0) for n in names)
    weights0 = sorted(float(w) for w in t_ms[0] if w > 0)  # lam and 1 - lam (cutmix: lam corrected to the box)
    notes = [f"{os.path.relpath(recipe, ROOT) if os.path.isabs(recipe) else recipe}: {cfg['opt']} lr {cfg['lr']:g} "
             f"(cosine, {cfg['warmup_epochs']} warm-up epochs, {cfg['num_cycles']} cycle(s)), weight decay "
             f"{cfg['weight_decay']:g} ({cfg['weight_decay_filter']}), label smoothing {s:g}, mixup {cfg['mixup']:g} / "
             f"cutmix {cfg['cutmix']:g}, loss scale {cfg['loss_scale_type']} {cfg['loss_scale']:g}, "
             f"EMA {cfg['ema_decay'] if cfg['ema'] else 'off'}, clipping "
             f"{cfg['clip_value'] if cfg['clip_grad'] else 'off'}; run at amp_level O0 (fp32) on CPU, batch {batch}, "
             f"{img_size}x{img_size}, MindSpore {mode}",
             f"step {step} of {len(got['schedule'])} ({steps_per_epoch} steps/epoch): lr {got['lr']:.6g}; "
             f"{'EMA decay ' + format(mindcv_ema_decay(cfg['ema_decay'], step), '.6g') + ' (mindcv warm-up); ' if cfg['ema'] else ''}"
             f"loss scale {cfg['loss_scale']:g} -> {got['loss_scale']:g}; batch mixed by {mix}"
             + f" (target weights {' / '.join(f'{w:.4f}' for w in weights0)}); gradient norm {ref['grad_norm']:.4g}"
             + (f", clipped by {ref['clip_coef']:.4g}" if cfg["clip_grad"] else ""),
             ("overflow: the step is skipped on both sides (weights and EMA unchanged), the loss scale lowered; "
              "mindcv also holds the lr schedule and the EMA warm-up on a skipped step (timm's train.py advances "
              "both)" if ref["skipped"] else
              f"every weight tensor moved by at least {moved:.2g} of its max |w| (the bound is 1e-5)"),
             f"weight decay groups: {len(got['decayed'])} of {len(names)} tensors decayed on both sides"
             if groups_ok else f"weight decay groups DIFFER: torch-only {sorted(ref['decayed'] - got['decayed'])[:4]}, "
                               f"coat_ms-only {sorted(got['decayed'] - ref['decayed'])[:4]}"]
    flags = "".join(f" --{k} {v}" for k, v in overrides.items())
    return Study("recipe_step", variant, f"{os.path.basename(recipe)}{flags}, step {step}, {img_size} b{batch} {mode}",
                 comps,
                 time.time() - t0, notes=notes, extra=dict(ok=groups_ok, n_scalar=n_scalar, mix=mix, moved=moved, skipped=ref["skipped"],
                                                           grad_norm=ref["grad_norm"], clip_coef=ref["clip_coef"]))
