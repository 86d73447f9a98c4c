"""Training checkpoints: latest + top-k by validation Top-1, with optimizer state, epoch and step.

Every file is written to a temporary name in the same folder and then os.replace'd, so a process
killed during a save leaves the previous file intact.  Entries that are not network weights keep
names that coat_ms.checkpoint recognises as training state, so a training checkpoint still loads
strictly into a bare model.
"""
import logging
import os
import re
import signal

import mindspore as ms
import numpy as np

from ..checkpoint import TRAINING_STATE_PREFIXES, compare_state, read_checkpoint
from ..errors import CheckpointError

logger = logging.getLogger("coat_ms")

# Optimizer / train-step entries whose own names are not recognised as training state are stored
# under this (recognised) prefix and renamed back on resume.
STATE_PREFIX = "accum.state."


def _state_name(name, model_names):
    if name in model_names or name.startswith(TRAINING_STATE_PREFIXES):
        return name
    return STATE_PREFIX + name


# Fault injection for the crash tests: COAT_MS_KILL_DURING_SAVE=<epoch> makes the process SIGKILL itself
# after that epoch's checkpoint is fully written to its temp file but before the rename (no cleanup runs,
# exactly like a crash or a scheduler's kill).
KILL_DURING_SAVE = "COAT_MS_KILL_DURING_SAVE"


def _maybe_kill(epoch):
    if epoch is not None and os.environ.get(KILL_DURING_SAVE) == str(epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_save(entries, path, epoch=None):
    """ms.save_checkpoint to a temp file beside ``path``, flush it to disk, then rename over it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}.ckpt")  # ms wants a .ckpt suffix
    try:
        ms.save_checkpoint(entries, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _maybe_kill(epoch)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def train_state_entries(train_step, model, epoch, step):
    """Everything needed to continue: weights, optimizer, EMA, loss scale, epoch and global step."""
    model_names = set(model.parameters_dict())
    entries = []
    for name, param in train_step.parameters_dict().items():
        entries.append({"name": _state_name(name, model_names), "data": ms.Tensor(param.asnumpy())})
    entries.append({"name": "epoch_num", "data": ms.Tensor(np.array(epoch, np.int32))})
    entries.append({"name": "step_num", "data": ms.Tensor(np.array(step, np.int32))})
    return entries


def weights_entries(model, ema_params=None):
    """Plain network weights (the EMA copy when given), loadable by create_model(checkpoint_path=...)."""
    if ema_params is None:
        return [{"name": n, "data": ms.Tensor(p.asnumpy())} for n, p in model.parameters_dict().items()]
    return [{"name": n, "data": ms.Tensor(ema_params["ema." + n].asnumpy())} for n in model.parameters_dict()]


def load_train_state(train_step, model, path):
    """Restore a training checkpoint into train_step; returns (epoch, step). Clear errors, never partial."""
    params = read_checkpoint(path)
    report = compare_state(model, params)
    if report.missing or report.mismatched or report.unexpected:
        raise CheckpointError(f"cannot resume from {path}: it does not match this model ({report.problems()}); "
                              f"check --model, --num_classes and model_args")
    if "epoch_num" not in params or "step_num" not in params:
        raise CheckpointError(f"cannot resume from {path}: it holds weights only, no epoch/optimizer state "
                              f"(use --ckpt_path to start training from these weights)")
    restored = {(n[len(STATE_PREFIX):] if n.startswith(STATE_PREFIX) else n): p for n, p in params.items()}
    wanted = train_step.parameters_dict()
    absent = [n for n in wanted if n not in restored]
    if absent:
        raise CheckpointError(f"cannot resume from {path}: no saved state for {len(absent)} entries "
                              f"({', '.join(absent[:3])}...); was it written with another optimizer, EMA or "
                              f"loss-scale setting?")
    bad = [n for n in wanted if tuple(restored[n].shape) != tuple(wanted[n].shape)]
    if bad:
        raise CheckpointError(f"cannot resume from {path}: shapes differ for {', '.join(bad[:3])}")
    for name, param in wanted.items():
        param.set_data(ms.Tensor(restored[name].asnumpy(), dtype=param.dtype))
    return int(params["epoch_num"].asnumpy()), int(params["step_num"].asnumpy())


class CheckpointManager:
    """Keeps ``latest.ckpt`` and the ``keep`` best checkpoints by Top-1 in ``folder``."""

    def __init__(self, folder, model_name, keep=5, resumed_epoch=None):
        self.folder = folder
        self.model_name = model_name
        self.keep = max(1, int(keep))
        self.best = []  # (top1, epoch, path), best first
        os.makedirs(folder, exist_ok=True)
        pattern = re.compile(re.escape(model_name) + r"-e(\d{3,})-top1_([0-9.]+)\.ckpt$")
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and ".tmp" in entry.name:  # temp file of a killed run
                os.remove(entry.path)
            elif pattern.match(entry.name):  # a resumed run keeps ranking the earlier best ones
                m = pattern.match(entry.name)
                if resumed_epoch is not None and int(m.group(1)) > resumed_epoch:
                    logger.info("keeping %s from a later epoch than the resume point; it is not ranked", entry.name)
                    continue
                self.best.append((float(m.group(2)), int(m.group(1)), entry.path))
        self.best.sort(key=lambda t: (-t[0], t[1]))

    @property
    def latest_path(self):
        return os.path.join(self.folder, "latest.ckpt")

    def save(self, entries, epoch, top1=None):
        """Write latest.ckpt; also keep a top-k copy when top1 ranks among the best. Returns saved paths."""
        atomic_save(entries, self.latest_path, epoch)
        saved = [self.latest_path]
        if top1 is None:
            return saved
        if len(self.best) < self.keep or top1 > self.best[-1][0]:
            path = os.path.join(self.folder, f"{self.model_name}-e{epoch:03d}-top1_{top1:.4f}.ckpt")
            atomic_save(entries, path)
            saved.append(path)
            self.best.append((top1, epoch, path))
            self.best.sort(key=lambda t: (-t[0], t[1]))
            for _, _, old in self.best[self.keep:]:
                if os.path.exists(old):
                    os.remove(old)
            self.best = self.best[:self.keep]
        return saved

    @property
    def best_path(self):
        return self.best[0][2] if self.best else None
