"""A plain compiled training step (cross-entropy, forward + backward + optimizer update).

Used where the full mindcv TrainStep is not wanted: the benchmark, the profiler script and the
kernel-vs-stock training test (tests/kernel_train_steps.py) all time or compare exactly this step.
"""
import mindspore as ms
from mindspore import nn


def compiled_train_step(model, optimizer):
    """Return ``step(images, labels) -> loss``, compiled with ms.jit; updates ``model`` in place."""
    loss_fn = nn.CrossEntropyLoss()

    def forward(images, labels):
        return loss_fn(model(images), labels)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)

    @ms.jit
    def step(images, labels):
        loss, grads = grad_fn(images, labels)
        optimizer(grads)
        return loss

    return step
