"""What happens around the training steps: progress, logs, NaN stop, validation, checkpoints, results.

``TrainMonitor`` is a MindSpore Callback, so the same code serves ``Model.train`` with and without
dataset sink mode.  The loss is read from the device only every ``log_interval`` steps and at the
end of an epoch (through the training cell's in-graph counters), never per step.
"""
import datetime
import logging
import math
import os
import sys
import time

import numpy as np
from mindspore.train import Callback

from ..errors import CoatError
from .results import plot_curves, write_csv

logger = logging.getLogger("coat_ms")


class TrainingDiverged(CoatError):
    """The loss became NaN or infinite."""


def duration(seconds):
    """'2 d 3 h', '3 h 12 min', '12 min 3 s', '4.2 s'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    td = datetime.timedelta(seconds=int(seconds))
    days, rest = td.days, td.seconds
    hours, minutes, secs = rest // 3600, rest % 3600 // 60, rest % 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


class TrainMonitor(Callback):
    """Epoch bookkeeping for ``engine.train``; see the module doc.

    ``validate()`` runs on every rank (each on its shard) and returns the metrics of all ranks;
    ``save(epoch, step, top1)`` writes checkpoints (rank 0 only).
    """

    def __init__(self, run, cell, schedule, validate, save, csv_path, png_path, rows, started_at):
        super().__init__()
        self.run = run              # engine.RunInfo: cfg, dist, epochs, steps_per_epoch, global batch, ...
        self.cell = cell
        self.schedule = schedule
        self.validate = validate
        self.save = save
        self.csv_path, self.png_path = csv_path, png_path
        self.rows = rows
        self.started_at = started_at
        self.first_step_s = None
        self.metrics = {}
        self.bad_per_epoch = []
        self.epoch_times = []
        self.step = run.start_step
        self.bar = None
        self.use_bar = run.dist.is_main and sys.stderr.isatty()
        self.loss_scale = cell.train_step.loss_scale_value()

    # -- per step ------------------------------------------------------------------------------
    def on_train_begin(self, run_context):
        self.model_steps_seen = run_context.original_args().cur_step_num

    def on_train_epoch_begin(self, run_context):
        self.epoch_start = time.time()
        self.epoch_first_step = self.step
        self.last_log = (self.epoch_start, self.step)
        if self.use_bar:
            from tqdm import tqdm
            epoch = run_context.original_args().cur_epoch_num
            self.bar = tqdm(total=self.run.steps_per_epoch, desc=f"epoch {epoch}/{self.run.epochs}",
                            dynamic_ncols=True, leave=False)

    def on_train_step_end(self, run_context):
        args = run_context.original_args()
        new_steps = args.cur_step_num - self.model_steps_seen  # > 1 per call in device sink mode
        self.model_steps_seen = args.cur_step_num
        self.step += new_steps
        if self.first_step_s is None:
            self.first_step_s = time.time() - self.started_at
            if self.run.dist.is_main:
                logger.info("start-up: first training step done %.1f s after launch", self.first_step_s)
        if self.bar is not None:
            self.bar.update(new_steps)
        in_epoch = self.step - self.epoch_first_step
        if self.step // self.run.log_interval != (self.step - new_steps) // self.run.log_interval \
                and in_epoch < self.run.steps_per_epoch:
            self._log_progress(args, in_epoch)

    def _lr(self):
        return float(self.schedule[min(max(self.step - 1, 0), len(self.schedule) - 1)])

    def _log_progress(self, args, in_epoch):
        loss = float(np.asarray(args.net_outputs.asnumpy() if hasattr(args.net_outputs, "asnumpy")
                                else args.net_outputs).ravel()[0])
        self._check_finite(loss, args.cur_epoch_num)
        now = time.time()
        t0, s0 = self.last_log
        rate = (self.step - s0) * self.run.global_batch / max(now - t0, 1e-9)
        self.last_log = (now, self.step)
        left = (self.run.steps_per_epoch - in_epoch) * self.run.global_batch / max(rate, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr():.2e}", img_s=f"{rate:.1f}")
        elif self.run.dist.is_main:
            logger.info("epoch %d/%d step %d/%d: loss %.4f, lr %.2e, %.1f img/s, epoch ETA %s",
                        args.cur_epoch_num, self.run.epochs, in_epoch, self.run.steps_per_epoch, loss, self._lr(),
                        rate, duration(left))

    def _check_finite(self, loss, epoch):
        if not math.isfinite(loss):
            if self.bar is not None:
                self.bar.close()
            last = self.run.last_good()
            kept = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written"
            raise TrainingDiverged(f"loss became {loss} at epoch {epoch}, step {self.step}: training stopped{kept} "
                                   f"(lower --lr, enable --clip_grad, or check the data)")

    # -- per epoch -----------------------------------------------------------------------------
    def on_train_epoch_end(self, run_context):
        epoch = run_context.original_args().cur_epoch_num
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        steps = self.step - self.epoch_first_step
        if steps == 0:
            raise CoatError(f"epoch {epoch} received no training batches")
        loss_sum, bad, skipped_steps = self.cell.take_epoch_stats()
        self._log_loss_scale(epoch, skipped_steps)
        if self.run.dist.size > 1:  # every rank's share: the mean loss and the bad images of the whole epoch
            from .distributed import all_reduce_sum
            loss_sum, bad = all_reduce_sum(np.array([loss_sum, bad], dtype=np.float32))
            loss_sum, bad = float(loss_sum) / self.run.dist.size, int(round(float(bad)))
        train_loss = loss_sum / steps
        self._check_finite(train_loss, epoch)
        epoch_time = time.time() - self.epoch_start
        self.bad_per_epoch.append(bad)
        row = {"epoch": epoch, "step": self.step, "lr": self._lr(), "train_loss": train_loss, "val_loss": "",
               "top1": "", "top5": "", "epoch_time_s": epoch_time,
               "img_per_s": steps * self.run.global_batch / max(epoch_time, 1e-9), "skipped_images": bad}
        due = self.run.val_due(epoch)
        if due:
            metrics = self.validate()
            self.metrics = metrics
            row.update(val_loss=metrics["Loss"], top1=metrics["Top_1_Accuracy"], top5=metrics["Top_5_Accuracy"])
        self.epoch_times.append(time.time() - self.epoch_start)
        eta = np.mean(self.epoch_times[-3:]) * (self.run.epochs - epoch)
        if self.run.dist.is_main:
            val = ""
            if due:
                val = (f", val{' (EMA)' if self.run.cfg['ema'] else ''} Top-1 {100 * row['top1']:.2f}%, "
                       f"Top-5 {100 * row['top5']:.2f}%, loss {row['val_loss']:.4f}")
                if metrics.get("skipped"):
                    val += f" ({metrics['skipped']} unreadable val images skipped)"
            skipped = f"; {bad} unreadable training image(s) replaced" if bad else ""
            logger.info("epoch %d/%d: train loss %.4f%s, %.1f img/s, %s%s, ETA %s", epoch, self.run.epochs,
                        train_loss, val, row["img_per_s"], duration(epoch_time), skipped, duration(eta))
        if self.run.save_due(epoch):
            self.save(epoch, self.step, row["top1"] if row["top1"] != "" else None)
        if self.run.dist.is_main:
            self.rows.append(row)
            if self.run.last_good():  # results follow the first checkpoint: no run folder without one
                write_csv(self.csv_path, self.rows)
                plot_curves(self.png_path, self.rows, title=f"{self.run.cfg['model']} ({self.run.dist.size} rank(s))")

    def _log_loss_scale(self, epoch, skipped_steps):
        """A dynamic loss scale's epoch: the steps it skipped on overflow and where the scale went (a fixed scale
        never moves or skips; the overflow check is global, so every rank skipped the same steps)."""
        if not self.run.dist.is_main:
            return
        scale = self.cell.train_step.loss_scale_value()
        if skipped_steps or scale != self.loss_scale:
            logger.info("epoch %d: %d step(s) skipped on float overflow; loss scale %g -> %g", epoch, skipped_steps,
                        self.loss_scale, scale)
        self.loss_scale = scale

    def on_train_end(self, run_context):
        if self.bar is not None:
            self.bar.close()


def output_listing(out_dir, best):
    return f"{os.path.abspath(out_dir)} (latest.ckpt, best: {os.path.basename(best) if best else '-'}, " \
           f"results.csv, results.png)"
