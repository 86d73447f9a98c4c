"""The run folder: what a training run writes (latest / kept checkpoints with their training state)
and the rule that a folder belongs to one run.

* ``check_run_folder``: a new run never writes into a folder that holds another run's files (latest
  checkpoint, results, kept checkpoints): it stops with a one-line hint at ``--resume`` (when there is
  a checkpoint to resume) or a new folder.  A resumed run continues in the folder of its checkpoint
  (or an empty one).  The folder is created by the first checkpoint; results and config.yaml follow
  it, so a run stopped before its first checkpoint leaves nothing.
* ``CheckpointManager``: ``latest.ckpt`` every save, plus the best K by validation Top-1
  (``top_k``) or the latest K (``latest_k``).  It deletes only checkpoints of this run.
* Every file is written through coat_ms.fileio.atomic_write: a process killed during a save leaves
  the previous file intact; the temp file it leaves is removed by the next run in that folder.
* Entries that are not network weights keep names that coat_ms.checkpoint recognises as training
  state, so a training checkpoint still loads strictly into a bare model; every checkpoint carries
  the coat_ms record (model, classes, preprocessing, and the settings a resume must keep).
"""
import logging
import os
import re

import mindspore as ms
import numpy as np

from ..checkpoint import TRAINING_STATE_PREFIXES, compare_state, meta_entry, read_checkpoint_and_meta
from ..errors import CheckpointError, CoatError
from ..fileio import TEMP_MARK, atomic_write

logger = logging.getLogger("coat_ms")

# Optimizer / train-step entries whose own names are not recognised as training state are stored
# under this (recognised) prefix and renamed back on resume.
STATE_PREFIX = "accum.state."
RUN_FILES = ("latest.ckpt", "results.csv", "results.png", "ema_weights.ckpt", "config.yaml")


def _state_name(name, model_names):
    if name in model_names or name.startswith(TRAINING_STATE_PREFIXES):
        return name
    return STATE_PREFIX + name


def atomic_save(entries, path, meta=None, epoch=None):
    """ms.save_checkpoint through a temp file beside ``path`` (flushed, then renamed over it); ``epoch``: the
    epoch it saves (None for files that are no epoch's state)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(tmp):
        ms.save_checkpoint(entries, tmp, append_dict=meta_entry(meta) if meta else None)
    return atomic_write(path, write, suffix=".ckpt")  # MindSpore insists on a .ckpt suffix


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


def read_resume_checkpoint(path, model):
    """(params, meta, epoch, step) of a training checkpoint that fits ``model``; clear errors otherwise."""
    params, meta = read_checkpoint_and_meta(path)
    report = compare_state(model, params)
    if report.missing or report.mismatched or report.unexpected:
        raise CheckpointError(f"cannot resume from {path}: it does not match this model ({report.problems()}); "
                              f"check --model, --num_classes and model_args")
    if "epoch_num" not in params or "step_num" not in params:
        raise CheckpointError(f"cannot resume from {path}: it holds weights only, no epoch/optimizer state "
                              f"(use --ckpt_path to start training from these weights)")
    return params, meta, int(params["epoch_num"].asnumpy()), int(params["step_num"].asnumpy())


def check_resume_settings(path, saved, current):
    """Refuse a resume whose settings would not be honoured: the optimizer state and the lr schedule
    come from the checkpoint, so a changed lr, schedule, epoch count or batch layout is named, not
    silently ignored."""
    if not saved:
        return
    changed = [k for k in current if k in saved and saved[k] != current[k]]
    if changed:
        shown = ", ".join(f"{k}: checkpoint {saved[k]!r}, now {current[k]!r}" for k in changed[:4])
        raise CheckpointError(f"cannot resume from {path} with changed settings ({shown}): the optimizer state "
                              f"and lr schedule are restored from the checkpoint; resume with the run's settings, "
                              f"or start a new run from its weights with --ckpt_path")


def load_train_state(train_step, params, path):
    """Restore a training checkpoint's entries into train_step (all or nothing)."""
    restored = {(n[len(STATE_PREFIX):] if n.startswith(STATE_PREFIX) else n): p for n, p in params.items()}
    wanted = train_step.parameters_dict()
    absent = [n for n in wanted if n not in restored]
    if absent:
        raise CheckpointError(f"cannot resume from {path}: no saved state for {len(absent)} entries "
                              f"({', '.join(absent[:3])}...); was it written with another optimizer, EMA or "
                              f"loss-scale setting?")
    bad = [n for n in wanted if tuple(restored[n].shape) != tuple(wanted[n].shape)]
    if bad:
        raise CheckpointError(f"cannot resume from {path}: shapes differ for {', '.join(bad[:3])} (another "
                              f"optimizer, epoch count or dataset size?)")
    for name, param in wanted.items():
        param.set_data(ms.Tensor(restored[name].asnumpy(), dtype=param.dtype))


def _kept_pattern(model_name):
    return re.compile(re.escape(model_name) + r"-e(\d{3,})(?:-top1_([0-9.]+))?\.ckpt$")


_KEPT = re.compile(r".+-e\d{3,}(?:-top1_[0-9.]+)?\.ckpt$")


def _is_run_file(name):
    return name in RUN_FILES or bool(_KEPT.match(name))


def run_files(folder):
    """Names of files in ``folder`` that belong to a training run."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if _is_run_file(n))


def _nearest_existing(folder):
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def check_run_folder(folder, resume_path=None):
    """Check that ``folder`` may receive this run's files (one-line errors, see module doc).  Creates
    nothing: the folder appears with the run's first checkpoint, so a refused or failed start leaves
    no trace.  Removes the temp files a killed save of a run there left (never anything else)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CoatError(f"ckpt_save_dir {folder} is a file, not a folder: choose another --ckpt_save_dir")
    existing = run_files(folder)
    if resume_path:
        same = os.path.isdir(folder) and os.path.samefile(os.path.dirname(os.path.abspath(resume_path)), folder)
        if existing and not same:
            raise CoatError(f"ckpt_save_dir {folder} holds another run ({', '.join(existing[:3])}); resume into the "
                            f"checkpoint's own folder or an empty one")
    elif "latest.ckpt" in existing:
        raise CoatError(f"ckpt_save_dir {folder} already holds a run ({', '.join(existing[:3])}"
                        f"{', ...' if len(existing) > 3 else ''}): continue it with --resume "
                        f"{os.path.join(folder, 'latest.ckpt')}, or choose a new --ckpt_save_dir")
    elif existing:
        raise CoatError(f"ckpt_save_dir {folder} holds files of a run that saved no checkpoint "
                        f"({', '.join(existing[:3])}): there is nothing to continue; remove them or choose a new "
                        f"--ckpt_save_dir")
    parent = _nearest_existing(folder)
    if not os.path.isdir(parent):
        raise CoatError(f"cannot create ckpt_save_dir {folder}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CoatError(f"cannot write ckpt_save_dir {folder}: no permission to write in {parent}")
    if os.path.isdir(folder):
        for name in os.listdir(folder):  # temp files a killed save of this run left (never anything else)
            if name.startswith(".") and TEMP_MARK in name and _is_run_file(name[1:name.index(TEMP_MARK)]):
                os.remove(os.path.join(folder, name))


def claim_run_folder(folder, resume_path=None):
    """check_run_folder, then create the folder (for callers that write into it themselves)."""
    check_run_folder(folder, resume_path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise CoatError(f"cannot create ckpt_save_dir {folder}: {exc.strerror}") from None


def remove_if_unused(folder, existed):
    """After a run that saved nothing: remove ``folder`` if this run created it and it holds nothing but
    temp files of its own (a failed first save), so the disk is left as the run found it."""
    if existed or not os.path.isdir(folder):
        return
    names = os.listdir(folder)
    if all(n.startswith(".") and TEMP_MARK in n for n in names):
        for n in names:
            os.remove(os.path.join(folder, n))
        os.rmdir(folder)


class CheckpointManager:
    """``latest.ckpt`` and the ``keep`` best (policy top_k) or latest (latest_k) epoch checkpoints."""

    def __init__(self, folder, model_name, keep=10, policy="top_k", resumed_epoch=None):
        self.folder = folder
        self.model_name = model_name
        self.keep = max(1, int(keep))
        self.policy = policy
        self.kept = []  # (rank key, epoch, path), best first
        if resumed_epoch is None:
            return
        pattern = _kept_pattern(model_name)
        for name in sorted(os.listdir(folder)):  # a resumed run keeps ranking its earlier checkpoints
            m = pattern.match(name)
            if not m or (policy == "top_k") != (m.group(2) is not None):
                continue
            if int(m.group(1)) > resumed_epoch:
                logger.info("keeping %s from a later epoch than the resume point; it is not ranked", name)
                continue
            self.kept.append((self._key(float(m.group(2) or 0.0), int(m.group(1))), int(m.group(1)),
                              os.path.join(folder, name)))
        self.kept.sort(key=lambda t: t[0])

    def _key(self, top1, epoch):
        return (-top1, epoch) if self.policy == "top_k" else (-epoch,)

    @property
    def latest_path(self):
        return os.path.join(self.folder, "latest.ckpt")

    def save(self, entries, epoch, meta, top1=None):
        """Write latest.ckpt and, when it ranks, a kept copy; drop copies that fell out. Returns saved paths."""
        atomic_save(entries, self.latest_path, meta, epoch)
        saved = [self.latest_path]
        if self.policy == "top_k" and top1 is None:
            return saved
        key = self._key(top1 or 0.0, epoch)
        if len(self.kept) >= self.keep and key >= self.kept[-1][0]:
            return saved
        name = f"{self.model_name}-e{epoch:03d}" + (f"-top1_{top1:.4f}" if self.policy == "top_k" else "") + ".ckpt"
        path = os.path.join(self.folder, name)
        atomic_save(entries, path, meta)
        saved.append(path)
        self.kept.append((key, epoch, path))
        self.kept.sort(key=lambda t: t[0])
        for _, _, old in self.kept[self.keep:]:
            if os.path.exists(old):
                os.remove(old)
        self.kept = self.kept[:self.keep]
        return saved

    @property
    def best_path(self):
        return self.kept[0][2] if self.kept else None
