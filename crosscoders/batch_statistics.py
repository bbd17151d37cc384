"""Statistics that span a training batch, for one process or for a batch split over data-parallel ranks.

Under data parallelism (``torchrun``, :mod:`groupcc.training.distributed`) each rank holds ``n`` of the global
batch's ``W·n`` inputs. Three things a dictionary computes read the whole batch, not one input:

- BatchTopK's (and Matryoshka's) selection keeps the ``N·k`` largest pre-activations of the batch. Over ranks:
  each rank's ``W·n·k`` largest values are gathered, the ``(W·n·k)``-th largest of them is the global cut, and
  every rank keeps its values at or above it; that is the one-process selection on the whole batch (barring ties
  at the cut).
- Dead-latent counts: a feature fired in the batch when it fired on any rank (a logical or over ranks), so
  every rank keeps the same counts, hence the same AuxK mask.
- BatchTopK's moving threshold follows the smallest value kept, the minimum over ranks.

:data:`ONE_PROCESS` does none of this (the batch is all local); :class:`AcrossRanks` does it with
``torch.distributed`` collectives. A dictionary uses the one its trainer sets (``Dictionary.batch_statistics``),
only in training steps: evaluation never spans ranks.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class OneProcess:
    """The whole batch is on this process."""

    size = 1

    def top_count_cut(self, values: Tensor, count: int) -> Tensor | None:
        """The value at or above which ``count`` of the batch's values lie (``None``: select locally with topk)."""
        return None

    def any(self, mask: Tensor) -> Tensor:
        return mask

    def minimum(self, value: Tensor) -> Tensor:
        return value

    def total(self, value: Tensor) -> Tensor:
        return value


ONE_PROCESS = OneProcess()


class AcrossRanks(OneProcess):
    """The batch is split evenly over the ranks of the default ``torch.distributed`` process group."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        self.size = dist.get_world_size()

    def top_count_cut(self, values: Tensor, count: int) -> Tensor:
        """``count`` is the local count (``n·k``); the cut selects ``size·count`` values over all ranks. Each rank
        contributes its ``size·count`` largest values (no rank can hold more of the global selection), padded with
        ``-inf`` when it holds fewer, so that every rank gathers tensors of one size."""
        wanted = count * self.size
        local = values.topk(min(wanted, values.numel()), sorted=False).values
        if local.numel() < wanted:
            local = torch.cat([local, local.new_full((wanted - local.numel(),), float("-inf"))])
        gathered = [torch.empty_like(local) for _ in range(self.size)]
        self._dist.all_gather(gathered, local.detach().contiguous())
        return torch.cat(gathered).topk(wanted, sorted=False).values.min()

    def any(self, mask: Tensor) -> Tensor:
        counts = mask.to(torch.int32)
        self._dist.all_reduce(counts, op=self._dist.ReduceOp.MAX)
        return counts.bool()

    def minimum(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        self._dist.all_reduce(value, op=self._dist.ReduceOp.MIN)
        return value

    def total(self, value: Tensor) -> Tensor:
        value = value.detach().clone()
        self._dist.all_reduce(value)
        return value
