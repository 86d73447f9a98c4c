"""The training engine: config dict -> model, data, mindcv loss/optimizer/scheduler, TrainStep -> epochs.

train.py and coat_ms.demo are thin wrappers around ``train(cfg)``.
"""
import logging
import math
import os
import time

import mindspore as ms
import numpy as np
from mindspore import nn
from tqdm import tqdm

from .. import checkpoint as ckpt_io
from ..errors import CoatError
from ..factory import create_model
from .checkpoints import CheckpointManager, load_train_state, train_state_entries, weights_entries, atomic_save
from .distributed import DistInfo
from .results import plot_curves, write_csv

logger = logging.getLogger("coat_ms")


class TrainingDiverged(CoatError):
    """The loss became NaN or infinite."""


def device_target():
    return ms.get_context("device_target")


def resolve_amp(cfg, device):
    """amp_level and loss scaling that work on this device; says what it chose."""
    amp, scale_type = cfg["amp_level"], cfg["loss_scale_type"]
    if device == "CPU" and amp not in ("O0",):
        # MindSpore's CPU backend: O2 + dynamic loss scale raises, and fp16 kernels are slow; fp32 is exact.
        logger.info("amp: CPU device -> amp_level O0 (fp32) instead of %s, fixed loss scale 1", amp)
        return "O0", "fixed", 1.0
    if amp == "auto":
        amp = "O2"
    logger.info("amp: %s on %s, loss scale %s %s", amp, device, scale_type, cfg["loss_scale"])
    return amp, scale_type, float(cfg["loss_scale"])


def build_model(cfg):
    """create_model from the config; a --ckpt_path with another head size re-initialises the head."""
    model = create_model(cfg["model"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                         drop_rate=cfg["drop_rate"], drop_path_rate=cfg["drop_path_rate"], **(cfg.get("model_args") or {}))
    if cfg.get("ckpt_path"):
        load_finetune_weights(model, cfg["ckpt_path"])
    return model


def load_finetune_weights(model, path):
    """Strict load, except a classifier of another size, which is left freshly initialised (and said so)."""
    params = ckpt_io.read_checkpoint(path)
    report = ckpt_io.compare_state(model, params)
    head = [n for n, _, _ in report.mismatched if n.startswith("head.")]
    if head and len(head) == len(report.mismatched) and not report.missing and not report.unexpected:
        shapes = {n: (a, b) for n, a, b in report.mismatched}
        logger.info("fine-tuning: checkpoint head %s != model head %s: re-initialising the classifier (%s)",
                    shapes["head.weight"][0] if "head.weight" in shapes else "?",
                    shapes["head.weight"][1] if "head.weight" in shapes else "?", ", ".join(head))
        params = {n: p for n, p in params.items() if n not in head}
        report = ckpt_io.compare_state(model, params)
        if report.missing != head:
            raise ckpt_io.CheckpointError(f"{path} does not match the model: {report.problems()}")
        ckpt_io.load_state(model, params, strict=False, source=path)
    else:
        ckpt_io.load_state(model, params, strict=True, source=path)


def build_optimizer_and_schedule(cfg, model, steps_per_epoch):
    from mindcv.optim import create_optimizer
    from mindcv.scheduler import create_scheduler

    epochs, warmup = cfg["epoch_size"], cfg["warmup_epochs"]
    lr = cfg["lr"]
    if cfg.get("lr_scale_by_batch"):
        lr = lr * cfg["batch_size"] * cfg.get("_world_size", 1) / 512.0
    schedule = create_scheduler(steps_per_epoch, scheduler=cfg["scheduler"], lr=lr, min_lr=cfg["min_lr"],
                                warmup_epochs=warmup, warmup_factor=cfg["warmup_factor"],
                                decay_epochs=cfg.get("decay_epochs") or max(1, epochs - warmup),
                                decay_rate=cfg["decay_rate"], milestones=cfg.get("multi_step_decay_milestones"),
                                num_epochs=epochs, num_cycles=cfg["num_cycles"], cycle_decay=cfg["cycle_decay"],
                                lr_epoch_stair=cfg["lr_epoch_stair"])
    extra = {}
    if cfg.get("betas") and cfg["opt"] in ("adamw", "adam", "lion"):
        extra = dict(beta1=cfg["betas"][0], beta2=cfg["betas"][1])
    opt = create_optimizer(model.trainable_params(), opt=cfg["opt"], lr=schedule, weight_decay=cfg["weight_decay"],
                           momentum=cfg["momentum"], nesterov=cfg["use_nesterov"],
                           weight_decay_filter="norm_and_bias" if cfg["filter_bias_and_bn"] else "disable",
                           eps=cfg["eps"], **extra)
    return opt, schedule


def build_train_step(cfg, model, optimizer, device):
    from mindcv.loss import create_loss
    from mindcv.utils import TrainStep
    from mindcv.utils.amp import auto_mixed_precision

    amp, scale_type, scale = resolve_amp(cfg, device)
    if amp != "O0":
        auto_mixed_precision(model, amp_level=amp)
    loss_fn = create_loss(name=cfg["loss"], label_smoothing=cfg["label_smoothing"], aux_factor=cfg["aux_factor"],
                          reduction=cfg["reduction"])
    net_with_loss = nn.WithLossCell(model, loss_fn)
    if scale_type == "dynamic":
        scale_sense = nn.DynamicLossScaleUpdateCell(loss_scale_value=scale, scale_factor=cfg["scale_factor"],
                                                    scale_window=cfg["scale_window"])
    else:
        scale_sense = ms.Tensor(scale, ms.float32)
    step = TrainStep(net_with_loss, optimizer, scale_sense=scale_sense, ema=cfg["ema"], ema_decay=cfg["ema_decay"],
                     clip_grad=cfg["clip_grad"], clip_value=cfg["clip_value"],
                     gradient_accumulation_steps=cfg["gradient_accumulation_steps"])
    # mindcv's GradientAccumulation re-parents the optimizer, and MindSpore then renames the network's
    # parameters to "optimizer.<name>"; put the state-dict names back so checkpoints stay loadable.
    if hasattr(model, "name_parameters_by_path"):
        model.name_parameters_by_path()
    return step


def evaluate(model, loader):
    """Top-1, Top-5 and mean cross-entropy over a loader."""
    model.set_train(False)
    correct1 = correct5 = n = 0
    loss_sum = 0.0
    for images, labels in loader.create_tuple_iterator(num_epochs=1):
        logits = model(images).asnumpy().astype(np.float64)
        y = labels.asnumpy().astype(np.int64)
        top = np.argsort(-logits, axis=1)[:, :5]
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(axis=1).sum())
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-logp[np.arange(len(y)), y].sum())
        n += len(y)
    model.set_train(True)
    return {"Top_1_Accuracy": correct1 / max(n, 1), "Top_5_Accuracy": correct5 / max(n, 1), "Loss": loss_sum / max(n, 1),
            "num_images": n}


def evaluate_with_ema(model, train_step, loader):
    """Validate the EMA weights: swap them in, evaluate, swap the trained weights back."""
    params = model.parameters_dict()
    ema = train_step.parameters_dict()
    backup = {n: p.asnumpy().copy() for n, p in params.items()}
    for n, p in params.items():
        p.set_data(ms.Tensor(ema["ema." + n].asnumpy(), dtype=p.dtype))
    try:
        return evaluate(model, loader)
    finally:
        for n, p in params.items():
            p.set_data(ms.Tensor(backup[n], dtype=p.dtype))


def train(cfg, dist=None, out_dir=None):
    """Run training as configured; returns a summary dict (rank 0 writes all files)."""
    from ..data import create_split_loader, scan_split

    dist = dist or DistInfo()
    device = device_target()
    out_dir = out_dir or cfg["ckpt_save_dir"]
    ms.set_seed(cfg["seed"])  # same seed on every rank: initial weights are not broadcast
    shards = dict(num_shards=dist.size, shard_id=dist.rank) if dist.size > 1 else {}
    train_scan = scan_split(cfg["data_dir"], cfg["train_split"])
    if len(train_scan.classes) != cfg["num_classes"]:
        logger.warning("%s has %d classes but num_classes=%d", train_scan.root, len(train_scan.classes),
                       cfg["num_classes"])
    train_loader, _ = create_split_loader(cfg, cfg["train_split"], is_training=True, scan=train_scan, **shards)
    val_loader = None
    if cfg["val_while_train"] and dist.is_main:
        val_loader, _ = create_split_loader(cfg, cfg["val_split"], is_training=False)
    steps_per_epoch = train_loader.get_dataset_size()

    model = build_model(cfg)
    cfg = dict(cfg, _world_size=dist.size)
    optimizer, schedule = build_optimizer_and_schedule(cfg, model, steps_per_epoch)
    train_step = build_train_step(cfg, model, optimizer, device)
    train_step.set_train(True)

    start_epoch, global_step = 0, 0
    if cfg.get("resume"):
        start_epoch, global_step = load_train_state(train_step, model, cfg["resume"])
        if dist.is_main:
            logger.info("resumed from %s: epoch %d done, step %d", cfg["resume"], start_epoch, global_step)
    manager = CheckpointManager(out_dir, cfg["model"], cfg["keep_checkpoint_max"],
                                resumed_epoch=start_epoch if cfg.get("resume") else None) if dist.is_main else None
    csv_path, png_path = os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.png")
    rows = []
    if cfg.get("resume") and dist.is_main and os.path.exists(csv_path):
        from .results import read_csv
        rows = [_typed(r) for r in read_csv(csv_path) if int(r["epoch"]) <= start_epoch]

    epochs = cfg["epoch_size"]
    global_batch = cfg["batch_size"] * dist.size
    if dist.is_main:
        logger.info("training %s on %s: %d train images (%d skipped), %d classes, %d step(s)/epoch of %d images, "
                    "%d epochs, %d rank(s) [%s]", cfg["model"], device, train_scan.num_images,
                    len(train_scan.corrupt), len(train_scan.classes), steps_per_epoch, global_batch, epochs,
                    dist.size, dist.launcher)
    last_good = manager.latest_path if manager and os.path.exists(manager.latest_path) else None
    iterator = train_loader.create_tuple_iterator(num_epochs=max(1, epochs - start_epoch))
    result = {}
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        losses = []
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{epochs}", disable=not dist.is_main,
                   dynamic_ncols=True, leave=True)
        for i, (images, labels) in enumerate(iterator):
            loss = float(train_step(images, labels).asnumpy())
            global_step += 1
            if not math.isfinite(loss):
                bar.close()
                kept = f"; the last good checkpoint is {last_good}" if last_good else "; no checkpoint was written"
                raise TrainingDiverged(f"loss became {loss} at epoch {epoch + 1}, step {global_step}: training "
                                       f"stopped{kept} (lower --lr, enable --clip_grad, or check the data)")
            losses.append(loss)
            if dist.is_main:
                elapsed = time.time() - t0
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{schedule[min(global_step - 1, len(schedule) - 1)]:.2e}",
                                img_s=f"{(i + 1) * global_batch / max(elapsed, 1e-9):.1f}")
                bar.update(1)
        bar.close()  # the iterator ends each epoch by itself (breaking early would desynchronise epochs)
        if not losses:
            raise CoatError(f"epoch {epoch + 1} received no training batches")
        epoch_time = time.time() - t0
        row = {"epoch": epoch + 1, "step": global_step, "lr": float(schedule[min(global_step - 1, len(schedule) - 1)]),
               "train_loss": float(np.mean(losses)), "val_loss": "", "top1": "", "top5": "",
               "epoch_time_s": epoch_time, "img_per_s": steps_per_epoch * global_batch / max(epoch_time, 1e-9)}
        if dist.is_main:
            if val_loader is not None and ((epoch + 1) % cfg["val_interval"] == 0 or epoch + 1 == epochs):
                metrics = evaluate_with_ema(model, train_step, val_loader) if cfg["ema"] else evaluate(model, val_loader)
                row.update(val_loss=metrics["Loss"], top1=metrics["Top_1_Accuracy"], top5=metrics["Top_5_Accuracy"])
                result = metrics
                logger.info("epoch %d/%d: train loss %.4f, val%s Top-1 %.2f%%, Top-5 %.2f%%, loss %.4f (%.1f s)",
                            epoch + 1, epochs, row["train_loss"], " (EMA)" if cfg["ema"] else "",
                            100 * metrics["Top_1_Accuracy"], 100 * metrics["Top_5_Accuracy"], metrics["Loss"], epoch_time)
            else:
                logger.info("epoch %d/%d: train loss %.4f (%.1f s)", epoch + 1, epochs, row["train_loss"], epoch_time)
            if (epoch + 1) % cfg["ckpt_save_interval"] == 0 or epoch + 1 == epochs:
                manager.save(train_state_entries(train_step, model, epoch + 1, global_step), epoch + 1,
                             top1=row["top1"] if row["top1"] != "" else None)
                last_good = manager.latest_path
                if cfg["ema"]:
                    atomic_save(weights_entries(model, train_step.parameters_dict()),
                                os.path.join(out_dir, "ema_weights.ckpt"))
            rows.append(row)
            write_csv(csv_path, rows)
            plot_curves(png_path, rows, title=f"{cfg['model']} ({dist.size} rank(s))")
    summary = {"epochs": epochs, "steps": global_step, "out_dir": out_dir, "metrics": result,
               "latest": manager.latest_path if manager else None, "best": manager.best_path if manager else None,
               "csv": csv_path, "plot": png_path, "skipped_images": len(train_scan.corrupt), "rank": dist.rank}
    summary["_train_step"] = train_step
    summary["_model"] = model
    return summary


def _typed(row):
    out = {}
    for k, v in row.items():
        if v in ("", None):
            out[k] = ""
        elif k in ("epoch", "step"):
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out
