"""The training engine: settings -> data, model, mindcv loss/optimizer/scheduler, training cell -> epochs.

train.py and coat_ms.demo are thin wrappers around ``train(cfg, dist)``.  The epochs run through
MindSpore's ``Model.train`` (dataset sink mode or not, as configured) with ``TrainMonitor`` doing the
epoch bookkeeping; validation runs on every rank, each on its share of the val split.
"""
import dataclasses
import logging
import os
import time

import mindspore as ms
import numpy as np
from mindspore import nn

from ..amp import apply_amp, backend_for, level_that_runs
from ..checkpoint import load_with_fresh_head, make_meta, read_checkpoint_and_meta
from ..config import KEYS, RESUME_KEYS, Source
from ..data.files import DataError, list_split
from ..data.pipeline import eval_dataset, train_dataset, worker_count
from ..data.transforms import preprocessing_from_config
from ..errors import CoatError
from ..evaluation import cell_predictor, evaluate
from ..factory import create_model
from ..origin import read_weights
from . import preflight
from .run_folder import (CheckpointManager, atomic_save, check_resume_settings, load_train_state,
                         read_resume_checkpoint, remove_if_unused, train_state_entries, weights_entries)
from .distributed import DistInfo
from .monitor import TrainingDiverged, TrainMonitor  # noqa: F401  (TrainingDiverged is part of the API)
from .results import read_rows
from .train_cell import TrainingCell, TrainStep

logger = logging.getLogger("coat_ms")

def device_target():
    return ms.get_context("device_target")


@dataclasses.dataclass(frozen=True)
class AmpPlan:
    """What a run computes in: the training and validation amp levels and the loss scaling."""
    level: str = "O0"
    val_level: str = "O0"
    scale_type: str = "fixed"
    scale: float = 1.0


def resolve_amp(cfg, device):
    """The AmpPlan this run uses on ``device`` (see coat_ms.amp for the rules); says what it chose."""
    level = level_that_runs(cfg["amp_level"], device, explicit=cfg.from_flag("amp_level"), on_cpu=cfg["amp_on_cpu"])
    val_level = level_that_runs(cfg["val_amp_level"], device, on_cpu=cfg["amp_on_cpu"], what="val_amp_level",
                                explicit=cfg.from_flag("val_amp_level"))
    scale_type = cfg["loss_scale_type"]
    if scale_type == "auto":
        scale_type = "dynamic" if level in ("O2", "O3") else "fixed"
    plan = AmpPlan(level, val_level, scale_type, float(cfg["loss_scale"]))
    logger.info("amp: %s on %s (%s), loss scale %s %s; validation at %s", level, device,
                "MindSpore's operators, float16" if level != "O0" else "float32", scale_type, plan.scale, val_level)
    return plan


def starting_weights(cfg):
    """(parameters or None, record) of the weights a run starts from: --ckpt_path (read once, in any layout
    coat_ms.origin.read_weights knows), else --pretrained (timm's record; the weights load with the
    model), else random (None, {})."""
    if cfg["ckpt_path"]:
        return read_weights(cfg["ckpt_path"])
    if cfg["pretrained"]:
        from ..origin import TIMM, record
        return None, record(cfg["model"], TIMM)
    return None, {}


def run_model_args(cfg, record):
    """The run's constructor options: the starting weights' switches (e.g. mindcv's), updated by model_args."""
    return dict((record or {}).get("model_args") or {}, **(cfg["model_args"] or {}))


def resolve_preprocess_style(cfg, record):
    """preprocess_style of the run: as given, else the starting weights' (timm's weights train and evaluate
    with PIL's kernel), else mindcv's (data.transforms.preprocessing_from_config).  Sets it in ``cfg`` and
    says why."""
    from ..data.transforms import PIL_FILTERS, TIMM
    from ..origin import origin_of
    if cfg["preprocess_style"] is None:
        cfg["preprocess_style"] = preprocessing_from_config(cfg, record).style
        made_by = origin_of(record)
        why = f"the starting weights are {made_by}'s" if made_by else "no recorded starting weights"
        logger.info("preprocessing: %s style (%s; set preprocess_style to choose)", cfg["preprocess_style"], why)
    if cfg["preprocess_style"] == TIMM and PIL_FILTERS.get(cfg["interpolation"]) != "BICUBIC":
        logger.warning("preprocessing: timm style with interpolation %s: evaluation resizes with PIL's filter, "
                       "training crops with MindSpore's (only bicubic has PIL's kernel in MindSpore)",
                       cfg["interpolation"])
    return cfg["preprocess_style"]


def model_kwargs(cfg, num_classes, amp_level, record=None):
    """create_model's arguments for the run's network: the starting weights' switches updated by model_args,
    on MindSpore's operators at a float16 amp level."""
    kwargs = dict(num_classes=num_classes, in_channels=cfg["in_channels"], drop_rate=cfg["drop_rate"] or 0.0,
                  drop_path_rate=cfg["drop_path_rate"] or 0.0, **run_model_args(cfg, record))
    kwargs.setdefault("backend", backend_for(amp_level))
    return kwargs


def build_model(cfg, num_classes, amp_level="O0", start=None):
    """create_model from the settings: --ckpt_path (fine-tuning, wins), else --pretrained, else random.

    ``start``: starting_weights(cfg) when the caller has read them already."""
    params, record = start if start is not None else starting_weights(cfg)
    kwargs = model_kwargs(cfg, num_classes, amp_level, record)
    if cfg["ckpt_path"]:
        if cfg["pretrained"]:
            logger.info("pretrained: starting from --ckpt_path %s (it wins over the hub weights)", cfg["ckpt_path"])
        model = create_model(cfg["model"], **kwargs)
        load_with_fresh_head(model, params, cfg["ckpt_path"])
        return model
    return create_model(cfg["model"], pretrained=cfg["pretrained"], **kwargs)


class EvalNetwork:
    """The network validation runs: a twin of the trained model at ``val_amp_level`` (float32 by default, as
    mindcv validates), given the trained or the EMA weights before each validation.

    The trained model itself may be float16 (amp O2/O3) and on MindSpore's operators; the twin is built once
    (and compiled once), and only the weights are copied in (a host copy per validation, not per step).
    """

    def __init__(self, cfg, num_classes, level, record=None):
        kwargs = dict(model_kwargs(cfg, num_classes, level, record), drop_rate=0.0, drop_path_rate=0.0)
        self.net = apply_amp(create_model(cfg["model"], **kwargs), level)
        self.net.set_train(False)

    def load(self, params, prefix=""):
        """Copy ``params[prefix + name]`` into every parameter of the twin."""
        for name, param in self.net.parameters_dict().items():
            param.set_data(ms.Tensor(params[prefix + name].asnumpy(), dtype=param.dtype))
        return self.net


# The optimizers that have an epsilon / two betas.  mindcv's factory hands `eps` to RMSProp only (the Adam
# family keeps its own 1e-8, Lamb 1e-6); a value chosen for this run is set on them too.
_TAKES_EPS = ("adam", "adamw", "nadam", "adan", "lamb", "rmsprop")
_TAKES_BETAS = ("adam", "adamw", "lion", "nadam", "adan", "lamb")


def optimizer_keywords(cfg):
    """Keywords for the optimizer from ``eps`` and ``betas``; one given for an optimizer that has no such
    setting is an error (never silently unused)."""
    opt, extra = cfg["opt"], {}
    if cfg["betas"]:
        if opt not in _TAKES_BETAS:
            raise CoatError(f"{cfg.named('betas')}: {opt} has no betas; remove them or use one of "
                            f"{', '.join(_TAKES_BETAS)}")
        extra.update(beta1=cfg["betas"][0], beta2=cfg["betas"][1])
    source = cfg.source("eps")  # a resumed run's record repeats every setting, the default eps included
    if source.kind != Source.DEFAULT and not (source.kind == Source.RECORD and cfg["eps"] == KEYS["eps"].default):
        if opt not in _TAKES_EPS:
            raise CoatError(f"{cfg.named('eps')}: {opt} has no epsilon; remove eps or use one of "
                            f"{', '.join(_TAKES_EPS)}")
        if opt != "rmsprop":  # mindcv passes it to RMSProp itself
            extra["eps"] = cfg["eps"]
    return extra


def set_epsilon(optimizer, eps):
    """Set the epsilon of a built Adam-family optimizer (they keep it as a float32 Tensor, ``eps``, read when
    the training graph compiles): mindcv's factory has no way to pass it (its own ``eps`` goes to RMSProp)."""
    optimizer.eps = ms.Tensor(np.full(optimizer.eps.shape, eps, np.float32))


def build_optimizer_and_schedule(cfg, model, steps_per_epoch, world_size=1):
    from mindcv.scheduler import create_scheduler

    from .param_groups import create_grouped_optimizer, weight_decay_groups

    epochs, warmup = cfg["epoch_size"], cfg["warmup_epochs"]
    lr = cfg["lr"]
    if cfg["lr_scale_by_batch"]:
        lr = lr * cfg["batch_size"] * world_size / 512.0
    schedule = create_scheduler(steps_per_epoch, scheduler=cfg["scheduler"], lr=lr, min_lr=cfg["min_lr"],
                                warmup_epochs=warmup, warmup_factor=cfg["warmup_factor"],
                                decay_epochs=cfg["decay_epochs"] or max(1, epochs - warmup),
                                decay_rate=cfg["decay_rate"], milestones=cfg["multi_step_decay_milestones"],
                                num_epochs=epochs, num_cycles=cfg["num_cycles"], cycle_decay=cfg["cycle_decay"],
                                lr_epoch_stair=cfg["lr_epoch_stair"])
    extra = optimizer_keywords(cfg)
    eps = extra.pop("eps", None)
    groups, groups_text = weight_decay_groups(model, cfg["weight_decay"], cfg["weight_decay_filter"])
    opt = create_grouped_optimizer(groups, opt=cfg["opt"], lr=schedule, momentum=cfg["momentum"],
                                   nesterov=cfg["use_nesterov"], eps=cfg["eps"], **extra)
    if eps is not None:
        set_epsilon(opt, eps)
    logger.info("optimizer %s: %s", cfg["opt"], groups_text)
    return opt, schedule


class LossInFloat32(nn.Cell):
    """network -> loss, with the logits and the (soft) labels cast to float32 first: a float16 network's
    loss is still computed in float32 (mindcv does the same at O2/O3); a no-op for a float32 network."""

    def __init__(self, network, loss_fn):
        super().__init__(auto_prefix=False)
        self._backbone = network
        self._loss_fn = loss_fn

    def construct(self, images, labels):
        logits = self._backbone(images).astype(ms.float32)
        if labels.dtype == ms.float16:
            labels = labels.astype(ms.float32)
        return self._loss_fn(logits, labels)


def build_train_step(cfg, model, optimizer, amp=AmpPlan()):
    """mindcv's loss and coat_ms's TrainStep around ``model``, with the AmpPlan's level applied to the model."""
    from mindcv.loss import create_loss

    apply_amp(model, amp.level, cfg["amp_cast_list"])
    loss_fn = create_loss(name=cfg["loss"], label_smoothing=cfg["label_smoothing"], aux_factor=cfg["aux_factor"],
                          reduction=cfg["reduction"])
    net_with_loss = LossInFloat32(model, loss_fn)
    if amp.scale_type == "dynamic":
        scale_sense = nn.DynamicLossScaleUpdateCell(loss_scale_value=amp.scale, scale_factor=cfg["scale_factor"],
                                                    scale_window=cfg["scale_window"])
    else:
        scale_sense = ms.Tensor(amp.scale, ms.float32)
    step = TrainStep(net_with_loss, optimizer, scale_sense=scale_sense, ema=cfg["ema"], ema_decay=cfg["ema_decay"],
                     clip_grad=cfg["clip_grad"], clip_value=cfg["clip_value"],
                     gradient_accumulation_steps=cfg["gradient_accumulation_steps"])
    # mindcv's GradientAccumulation re-parents the optimizer, and MindSpore then renames the network's
    # parameters to "optimizer.<name>"; put the state-dict names back so checkpoints stay loadable.
    if hasattr(model, "name_parameters_by_path"):
        model.name_parameters_by_path()
    return step


@dataclasses.dataclass
class TrainData:
    """The listed splits of a run and the class order that defines the labels."""
    train: object
    val: object
    num_classes: int

    @classmethod
    def list(cls, cfg, watch=None):
        t0 = time.time()
        train_images = list_split(cfg["data_dir"], cfg["train_split"], watch=watch)
        classes = train_images.classes
        num_classes = cfg["num_classes"] or len(classes)
        if len(classes) > num_classes:
            raise DataError(f"{train_images.root} has {len(classes)} class folders but num_classes={num_classes}: "
                            f"labels {num_classes}..{len(classes) - 1} have no output; set --num_classes "
                            f"{len(classes)} or remove the extra folders")
        if len(classes) < num_classes:
            logger.warning("%s has %d class folders, fewer than num_classes=%d (outputs without data stay untrained)",
                           train_images.root, len(classes), num_classes)
        val_images = None
        if cfg["val_while_train"]:
            val_images = list_split(cfg["data_dir"], cfg["val_split"], require_every_class=False,
                                    watch=watch).relabelled(classes)
        logger.info("data: listed %d train%s images in %.1f s", len(train_images),
                    f" and {len(val_images)} val" if val_images is not None else "", time.time() - t0)
        return cls(train_images, val_images, num_classes)


@dataclasses.dataclass
class RunInfo:
    """What the monitor needs to know about the run."""
    cfg: dict
    dist: DistInfo
    epochs: int
    steps_per_epoch: int
    global_batch: int
    start_step: int
    log_interval: int
    last_good: object

    def val_due(self, epoch):
        return self.cfg["val_while_train"] and (epoch % self.cfg["val_interval"] == 0 or epoch == self.epochs)

    def save_due(self, epoch):
        return epoch % self.cfg["ckpt_save_interval"] == 0 or epoch == self.epochs


def train(cfg, dist=None, started_at=None):
    """Run training as configured; returns a summary dict (rank 0 writes all files)."""
    started_at = started_at or time.time()
    dist = dist or DistInfo()
    device = device_target()
    resume = None
    if cfg["resume"]:
        resume_params, resume_meta = read_checkpoint_and_meta(cfg["resume"])
        cfg, saved = preflight.resumed_settings(cfg, resume_meta, cfg["resume"])
        check_resume_settings(cfg["resume"], saved, {k: cfg[k] for k in RESUME_KEYS})
        resume = (resume_params, resume_meta)
    preflight.check_device_support(cfg, device)
    preflight.check_model_request(cfg)
    out_dir = cfg["ckpt_save_dir"]
    csv_path, png_path = os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "results.png")
    rows, watch, folder_existed = [], None, os.path.isdir(out_dir)
    if dist.is_main:
        watch = preflight.check_run_outputs(cfg, out_dir, cfg["resume"])
        if resume and os.path.exists(csv_path):
            rows = read_rows(csv_path, int(resume[0]["epoch_num"].asnumpy()) if "epoch_num" in resume[0] else 0)
    ms.set_seed(cfg["seed"])  # same seed on every rank: initial weights are not broadcast
    import mindspore.dataset as ds
    ds.config.set_seed(cfg["seed"])

    data = TrainData.list(cfg, watch)
    num_classes = data.num_classes
    # a resumed run rebuilds the model its checkpoint records (switches of the weights it started from)
    start = (None, resume[1]) if resume else starting_weights(cfg)
    resolve_preprocess_style(cfg, start[1])
    loader = train_dataset(cfg, data.train, num_classes, dist.rank, dist.size)
    steps_per_epoch = loader.get_dataset_size()
    pre = preprocessing_from_config(cfg)
    val_loader = None
    if data.val is not None:
        val_loader, _ = eval_dataset(data.val, pre, cfg["batch_size"], worker_count(cfg["num_parallel_workers"]),
                                     dist.rank, dist.size)

    if dist.is_main:
        logger.info("start-up: data pipelines ready %.1f s after launch", time.time() - started_at)
    amp = resolve_amp(cfg, device)
    model = build_model(cfg, num_classes, amp.level, start)
    optimizer, schedule = build_optimizer_and_schedule(cfg, model, steps_per_epoch, dist.size)
    train_step = build_train_step(cfg, model, optimizer, amp)
    eval_network = EvalNetwork(cfg, num_classes, amp.val_level, start[1]) if val_loader is not None else None
    cell = TrainingCell(train_step)
    cell.set_train(True)

    epochs = cfg["epoch_size"]
    training_record = {"settings": dict(cfg), "steps_per_epoch": steps_per_epoch, "world_size": dist.size}
    start_epoch, start_step = 0, 0
    if resume:
        params, meta = resume
        read_resume_checkpoint(cfg["resume"], model)  # shape/state checks with clear messages
        saved_layout = meta.get("training") or {}
        if saved_layout and (saved_layout.get("steps_per_epoch"), saved_layout.get("world_size")) != \
                (steps_per_epoch, dist.size):
            raise CoatError(f"cannot resume from {cfg['resume']}: it was trained with {saved_layout.get('steps_per_epoch')} "
                            f"steps per epoch on {saved_layout.get('world_size')} rank(s), this run has "
                            f"{steps_per_epoch} on {dist.size} (same data, batch size and ranks are needed)")
        load_train_state(train_step, params, cfg["resume"])
        start_epoch, start_step = int(params["epoch_num"].asnumpy()), int(params["step_num"].asnumpy())
        if start_epoch >= epochs:
            raise CoatError(f"{cfg['resume']} already finished epoch {start_epoch} of {epochs}: nothing to resume")
        if dist.is_main:
            logger.info("resumed from %s: epoch %d done, step %d", cfg["resume"], start_epoch, start_step)
    meta = make_meta(cfg["model"], num_classes, data.train.classes, pre, run_model_args(cfg, start[1]),
                             training=training_record)

    manager = CheckpointManager(out_dir, cfg["model"], cfg["keep_checkpoint_max"], cfg["ckpt_save_policy"],
                                resumed_epoch=start_epoch if resume else None) if dist.is_main else None
    global_batch = cfg["batch_size"] * dist.size

    def validate():
        if cfg["ema"]:
            net = eval_network.load(train_step.parameters_dict(), prefix="ema.")
        else:
            net = eval_network.load(model.parameters_dict())
        sums = evaluate(cell_predictor(net), val_loader, num_classes, cfg["batch_size"], dist,
                        progress=dist.is_main and _interactive(), desc="validate")
        result = sums.result(data.train.classes)
        return dict(result.metrics(), num_images=result.num_samples, skipped=result.skipped)

    def save(epoch, step, top1):
        if not dist.is_main:
            return
        first = not os.path.exists(manager.latest_path)
        try:
            manager.save(train_state_entries(train_step, model, epoch, step), epoch, meta, top1=top1)
        except BaseException:
            if first:  # the run created nothing that stays: leave no empty run folder
                remove_if_unused(out_dir, folder_existed)
            raise
        if cfg["ema"]:
            atomic_save(weights_entries(model, train_step.parameters_dict()), os.path.join(out_dir, "ema_weights.ckpt"),
                        meta)
        if first and not os.path.exists(os.path.join(out_dir, "config.yaml")):  # a resumed run keeps its own
            _save_config(cfg, out_dir)

    run = RunInfo(cfg, dist, epochs, steps_per_epoch, global_batch, start_step, cfg["log_interval"],
                  last_good=lambda: manager.latest_path if manager and os.path.exists(manager.latest_path) else None)
    if dist.is_main:
        logger.info("training %s on %s: %d train images, %d classes, %d step(s)/epoch of %d images, epochs %d..%d, "
                    "%d rank(s) [%s], dataset sink mode %s", cfg["model"], device, len(data.train),
                    len(data.train.classes), steps_per_epoch, global_batch, start_epoch + 1, epochs, dist.size,
                    dist.launcher, sink_mode_words(cfg["dataset_sink_mode"], device))
    monitor = TrainMonitor(run, cell, schedule, validate, save, csv_path, png_path, rows, started_at)
    from mindspore.train import Model
    try:
        Model(cell).train(epochs, loader, callbacks=[monitor], dataset_sink_mode=cfg["dataset_sink_mode"],
                          initial_epoch=start_epoch)
    except RuntimeError as exc:
        raise data_failure(exc) or exc

    total = sum(monitor.bad_per_epoch)
    return {"epochs": epochs, "steps": monitor.step, "out_dir": out_dir, "metrics": monitor.metrics,
            "latest": manager.latest_path if manager else None, "best": manager.best_path if manager else None,
            "csv": csv_path, "plot": png_path, "skipped_images": total, "skipped_per_epoch": monitor.bad_per_epoch,
            "rank": dist.rank, "first_step_s": monitor.first_step_s, "elapsed_s": time.time() - started_at,
            "_train_step": train_step, "_model": model}


def sink_mode_words(sink, device):
    """How the log states the sink setting: MindSpore 2.10 runs its step loop on CPU even with sink mode on."""
    if not sink:
        return "off"
    return "on (MindSpore runs it as its step loop on CPU)" if device == "CPU" else "on"


def data_failure(exc):
    """A DataError for a pipeline failure that coat_ms's decoder raised on purpose (MindSpore wraps it in a
    long RuntimeError), else None."""
    from ..data.decode import NO_READABLE_IMAGE
    for line in str(exc).splitlines():
        if NO_READABLE_IMAGE in line:
            return DataError(line[line.index(NO_READABLE_IMAGE):].strip())
    return None


def _interactive():
    import sys
    return sys.stderr.isatty()


def _save_config(cfg, out_dir):
    """The run's resolved settings as YAML (mindcv writes <model>.yaml; this one reloads with -c)."""
    import yaml

    from ..fileio import atomic_write_text
    keep = {k: v for k, v in cfg.items() if k != "output_dir"}
    atomic_write_text(os.path.join(out_dir, "config.yaml"), yaml.safe_dump(keep, sort_keys=True))
