"""The compiled training cell: mindcv's TrainStep, an overflow check that works on every device, and
per-epoch counters kept inside the graph.

* mindcv's TrainStep (EMA, clipping, accumulation, fixed or dynamic loss scale) asks MindSpore for the
  NPU float-status ops to detect overflow, which the CPU backend lacks, so a dynamic loss scale
  crashed on CPU.  ``TrainStep`` here checks the gradients for non-finite values with plain ops
  (summed over the ranks), the rule MindSpore uses on GPU.
* ``TrainingCell`` takes the batch's ``bad`` column (unreadable images, see coat_ms.data.decode) next
  to images and labels, and adds the loss and the bad count to two parameters.  The host reads them
  once per epoch: no per-step synchronisation, in sink mode and outside it alike.
"""
import mindspore as ms
from mindcv.utils import TrainStep as MindcvTrainStep
from mindspore import Parameter, Tensor, nn, ops

_non_finite = ops.MultitypeFuncGraph("non_finite")


@_non_finite.register("Tensor")
def _non_finite_tensor(grad):
    return ops.logical_not(ops.isfinite(grad)).any().astype(ms.float32)


class TrainStep(MindcvTrainStep):
    """mindcv's TrainStep with a device-independent overflow check (non-finite gradients on any rank), which
    counts the steps it skips (read once per epoch with the loss scale, see ``TrainingCell``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_steps = Parameter(Tensor(0.0, ms.float32), name="epoch_stats.skipped_steps", requires_grad=False)

    def get_overflow_status(self, status, compute_output):
        flags = ops.AddN()(self.hyper_map(_non_finite, compute_output))
        if self.is_distributed:
            flags = self.allreduce(flags)
        overflow = flags > 0
        return ops.depend(overflow, ops.assign_add(self.skipped_steps, overflow.astype(ms.float32)))

    def loss_scale_value(self):
        """The current loss scale (a host read)."""
        return float(self.scale_sense.asnumpy().ravel()[0])  # a Parameter for fixed and dynamic scaling alike


class TrainingCell(nn.Cell):
    """(images, labels, bad) -> loss, counting the epoch's loss sum and unreadable images in the graph."""

    def __init__(self, train_step):
        super().__init__(auto_prefix=False)
        self.train_step = train_step
        self.loss_sum = Parameter(Tensor(0.0, ms.float32), name="epoch_stats.loss_sum", requires_grad=False)
        self.bad_images = Parameter(Tensor(0.0, ms.float32), name="epoch_stats.bad_images", requires_grad=False)

    def construct(self, images, labels, bad):
        loss = self.train_step(images, labels)
        loss = ops.depend(loss, ops.assign_add(self.loss_sum, loss.astype(ms.float32)))
        return ops.depend(loss, ops.assign_add(self.bad_images, bad.astype(ms.float32).sum()))

    def take_epoch_stats(self):
        """(loss sum, unreadable images, steps skipped on overflow) since the last call; resets them (host reads
        once per epoch)."""
        counters = (self.loss_sum, self.bad_images, self.train_step.skipped_steps)
        loss_sum, bad, skipped = (float(c.asnumpy()) for c in counters)
        for counter in counters:
            counter.set_data(Tensor(0.0, ms.float32))
        return loss_sum, int(round(bad)), int(round(skipped))
