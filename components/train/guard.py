"""The training guard: skip non-finite and spiking steps, and roll back to the last checkpoint after too many bad
steps in a row (GuardConfig in components/train/config.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from components.train.config import GuardConfig


class Guard:
    """Skip bad steps and decide rollbacks (see GuardConfig); its counters travel with the checkpoints."""

    def __init__(self, cfg: GuardConfig, saved: dict | None = None):
        self.cfg = cfg
        saved = saved or {}
        self.skipped, self.rollbacks = int(saved.get("skipped", 0)), int(saved.get("rollbacks", 0))
        self.lr_scale = float(saved.get("lr_scale", 1.0))
        self.good: list[float] = list(saved.get("good", []))  # losses of the last `window` applied steps
        self.good_norms: list[float] = list(saved.get("good_norms", []))  # their gradient norms
        self.bad_in_a_row = 0
        self.fired: set[int] = set()  # planted faults fire once: the data moves on after a rollback
        self.plants = {int(k): v for k, v in cfg.plant.items()}

    def plant(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss of step `step + 1` with a planted fault, if one is configured for it (and has not fired)."""
        kind = self.plants.get(step + 1)
        if kind is None or step + 1 in self.fired:
            return loss
        self.fired.add(step + 1)
        if kind == "nan_grad":  # a finite loss whose gradients are not
            return _NonFiniteGradient.apply(loss)
        return loss * float("nan") if kind == "nan" else loss * 1e3

    def check(self, loss: float, grad_norm: float | None) -> str:
        """'ok', 'non-finite' or 'spike' for a step's global loss and gradient norm (identical on every rank)."""
        if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
            verdict = "non-finite"
        elif self._spike(loss, self.good, self.cfg.spike_factor) or (
            grad_norm is not None and self._spike(grad_norm, self.good_norms, self.cfg.grad_spike_factor)
        ):
            verdict = "spike"
        else:
            self.good = [*self.good, loss][-self.cfg.window :]
            if grad_norm is not None:
                self.good_norms = [*self.good_norms, grad_norm][-self.cfg.window :]
            self.bad_in_a_row = 0
            return "ok"
        self.skipped += 1
        self.bad_in_a_row += 1
        return verdict

    def _spike(self, value: float, recent: list[float], factor: float) -> bool:
        return factor > 0 and len(recent) >= self.cfg.window and value > factor * float(np.median(recent))

    def must_roll_back(self) -> bool:
        """Whether the bad steps in a row reached guard.max_bad_steps."""
        return self.cfg.max_bad_steps > 0 and self.bad_in_a_row >= self.cfg.max_bad_steps

    def roll_back(self, step: int, target: Path | None) -> None:
        """Count a rollback to checkpoint `target` at step `step` and lower the learning rate scale; raise when there
        is no checkpoint or the rollbacks ran out."""
        if target is None:
            raise RuntimeError(
                f"{self.bad_in_a_row} bad steps in a row at step {step} and no checkpoint to roll back to; "
                "lower optim.lr, raise optim.warmup_steps, or checkpoint earlier (ckpt_every)"
            )
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise RuntimeError(
                f"{self.bad_in_a_row} bad steps in a row at step {step} after {self.rollbacks} rollbacks "
                f"(guard.max_rollbacks); the run stops here with its checkpoints intact: lower optim.lr or set "
                "guard.lr_factor < 1 and resume"
            )
        self.rollbacks += 1
        self.lr_scale *= self.cfg.lr_factor
        self.bad_in_a_row = 0

    def metrics(self) -> dict[str, float]:
        """The counters as tracked metrics."""
        return {"guard/skipped_steps": self.skipped, "guard/rollbacks": self.rollbacks, "guard/lr_scale": self.lr_scale}

    def state(self) -> dict:
        """The counters for a checkpoint (the `saved` of __init__)."""
        return {"skipped": self.skipped, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale, "good": self.good,
                "good_norms": self.good_norms}  # fmt: skip


class _NonFiniteGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward (guard.plant: nan_grad)."""

    @staticmethod
    def forward(ctx, loss):
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")
