"""A queue of negatives (MoCo v2: He et al. 2020, Chen et al. 2020, arXiv:2003.04297), for
``loss.negatives_from: queue``.

The queue holds ``loss.queue_size`` keys: embeddings of earlier training samples (detached), with
their labels and data-set indices. An explicit-k loss draws its k negatives per anchor from the
queue (by its sampler, as from a data-set pool) instead of encoding a fresh pool every step, so
k is limited by the queue's size, not by the cost of encoding. After each step the keys of the
step's second views replace the oldest entries (first in, first out).

The keys come from the encoder itself (``model.momentum: 0``: a memory bank of recent
embeddings, detached) or from a momentum (EMA) copy of it (``model.momentum`` m > 0: MoCo's
key encoder, theta_k <- m theta_k + (1 - m) theta_q after every optimizer step; MoCo v2 uses
m = 0.999). At the start the queue is filled with the keys of ``queue_size`` training samples
drawn as the data-set pool would draw them (seeded), so the first step already has a full queue.

On frozen features the queue's entries are the embeddings of samples drawn from the training
marginal, as the data-set pool's are: both give the same loss in expectation
(tests/train/test_queue.py). The queue and the key encoder are part of the checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["NegativeQueue", "key_encoder", "update_key_encoder"]


@dataclass
class NegativeQueue:
    """``keys`` (Q, d) float32, ``labels`` and ``ids`` (Q,) int64, ``ptr`` the next slot."""

    keys: torch.Tensor
    labels: torch.Tensor
    ids: torch.Tensor
    ptr: int = 0

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    def push(self, keys: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor) -> None:
        """Replace the oldest entries by ``keys`` (detached), first in first out."""
        n = int(keys.shape[0])
        if n > self.size:  # more keys than slots: keep the newest
            keys, labels, ids = keys[-self.size :], labels[-self.size :], ids[-self.size :]
            n = self.size
        slots = (self.ptr + torch.arange(n)) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.labels[slots] = labels.to(self.labels.device)
        self.ids[slots] = ids.to(self.ids.device)
        self.ptr = int((self.ptr + n) % self.size)

    def state_dict(self) -> dict[str, Any]:
        return {"keys": self.keys.cpu(), "labels": self.labels.cpu(), "ids": self.ids.cpu(),
                "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["keys"].shape) != tuple(self.keys.shape):
            raise ValueError(f"queue: the checkpoint holds {tuple(state['keys'].shape)} keys; "
                             f"this run has {tuple(self.keys.shape)}")
        self.keys.copy_(state["keys"])
        self.labels.copy_(state["labels"])
        self.ids.copy_(state["ids"])
        self.ptr = int(state["ptr"])


def key_encoder(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` (MoCo's key encoder), in training mode like the model."""
    key = copy.deepcopy(model)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def update_key_encoder(key: nn.Module, model: nn.Module, momentum: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q; buffers (e.g. BatchNorm statistics) copied."""
    for pk, pq in zip(key.parameters(), model.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1.0 - momentum)
    for bk, bq in zip(key.buffers(), model.buffers(), strict=True):
        bk.copy_(bq)
