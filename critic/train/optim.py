"""The optimizer step every training stage takes (SFT and GRPO alike): the ``update`` that turns a
loss into a weight step, plain PyTorch (:func:`optimizer_update`) or DeepSpeed
(:func:`deepspeed_update`), both refusing a non-finite loss or gradient norm before it ruins the
weights; and the learning-rate schedule, a function of the step alone (:func:`learning_rate`).

Split from :mod:`critic.train.grpo`, which the SFT stages imported them from.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from critic.train.launch import all_ranks


class NonFiniteError(ValueError):
    """A loss or gradient norm is NaN or infinite: the step would ruin every weight."""


def check_finite(name: str, value: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` when ``value`` is NaN or infinite, on every
    process of a distributed run when it is so on any (a collective: each process calls it at
    the same point), so that none goes on alone into the update's gradient reduction."""
    finite = bool(torch.isfinite(value.detach()).all())
    if not all_ranks(finite):
        if finite:
            raise NonFiniteError(f"the {name} of another process is not finite")
        raise NonFiniteError(f"the {name} is {float(value.detach().float().sum()):g}")


def optimizer_update(
    model, optimizer, max_grad_norm: float | None = 1.0
) -> Callable[[torch.Tensor], None]:
    """The plain-PyTorch ``update``: zero grads, backward, clip to ``max_grad_norm``, step.

    Raises:
        NonFiniteError: the loss or the gradient norm is NaN or infinite; the weights are left
            as they were.
    """

    def update(loss: torch.Tensor) -> None:
        check_finite("loss", loss)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), math.inf if max_grad_norm is None else max_grad_norm
        )
        if not torch.isfinite(norm):
            optimizer.zero_grad()
            check_finite("gradient norm", norm)
        optimizer.step()

    return update


def deepspeed_update(engine) -> Callable[[torch.Tensor], None]:
    """DeepSpeed's ``update`` over a ``deepspeed.initialize`` engine: backward and step (DeepSpeed
    clips and zeroes the gradients itself). Every process of the run must call it at every
    update (``grpo.updates`` a step), as its gradient reduction is a collective.

    Raises:
        NonFiniteError: the loss is NaN or infinite on any process (no step is taken on any), or
            the global gradient norm is (the step was taken: write no weights after it).
    """

    def update(loss: torch.Tensor) -> None:
        check_finite("loss", loss)
        engine.backward(loss)
        engine.step()
        if (norm := engine.get_global_grad_norm()) is not None:
            check_finite("gradient norm", torch.as_tensor(norm))

    return update


SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(
    step: int, steps: int, lr: float, schedule: str = "constant", warmup: int = 0
) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``steps``: a linear warm-up over
    the first ``warmup`` steps, then ``constant``, ``linear`` decay to 0, or ``cosine`` decay to 0
    (the transformers schedules of the same names). A function of the step alone, so a resumed run
    and DeepSpeed's optimizer get the same rate with no scheduler state to save.

    Raises:
        ValueError: an unknown ``schedule``, or ``warmup`` outside ``[0, steps)``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {list(SCHEDULES)}")
    if not 0 <= warmup < max(steps, 1):
        raise ValueError(f"warmup={warmup} must be in [0, steps={steps})")
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    done = (step - warmup) / max(1, steps - warmup)
    if schedule == "linear":
        return lr * (1.0 - done)
    return lr * 0.5 * (1.0 + math.cos(math.pi * done))


def set_learning_rate(optimizer, lr: float) -> None:
    """Give every parameter group of ``optimizer`` (torch's or DeepSpeed's) the rate ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
