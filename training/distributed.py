"""Data parallelism on ``torch.distributed``, launched with ``torchrun``::

    torchrun --nproc-per-node 4 -m groupcc harvest --run RUN --out STORE
    torchrun --nproc-per-node 4 -m groupcc vision harvest ... --out STORE
    torchrun --nproc-per-node 4 -m groupcc dict train --acts STORE --out RUN ...

Each rank is one process; ``torchrun`` gives it ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address. :func:`join_world` joins the process group: ``nccl`` when CUDA is present (rank ``r`` of a node uses GPU
``LOCAL_RANK``), ``gloo`` on the CPU. Every library function then reads :func:`current_world`:

- a harvest gives each rank a contiguous run of the one-process harvest's forward batches; each rank writes
  its own shards into the store's staging directory, and after the ranks agree that all succeeded, rank 0 writes
  the manifest (shards in rank order, statistics summed in batch order), so the store holds the same rows in the
  same order as a one-process harvest, bit for bit (:func:`groupcc.training.harvest.collect`);
- dictionary training splits every global batch evenly over the ranks, averages gradients with
  ``DistributedDataParallel``, and reduces what spans the batch (:mod:`groupcc.crosscoders.batch_statistics`);
  rank 0 writes the run (:mod:`groupcc.training.dictionary_trainer`).

Several nodes need a directory every node sees at the same path (the store and the run are written there).
A failure on one rank that the ranks can agree on (a bad value, a full disk) is raised on every rank as the same
:class:`RankFailure`; any other failure ends that process, and ``torchrun`` then stops the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from groupcc.errors import GroupccError

#: How long a rank waits for the others at a collective before giving up (a harvest's ranks meet only at the end).
COLLECTIVE_TIMEOUT = timedelta(hours=12)


class RankFailure(GroupccError):
    """The first failure of any rank, raised on every rank (the message names the rank when it is not rank 0)."""


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel ranks (``rank 0 of 1`` without ``torchrun``)."""

    rank: int = 0
    size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes manifests, checkpoints and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def part(self, n_items: int) -> slice:
        """This rank's contiguous share of ``n_items`` (sizes differ by at most one; earlier ranks first)."""
        return slice(n_items * self.rank // self.size, n_items * (self.rank + 1) // self.size)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any picklable value)."""
        if not self.distributed:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        return values

    def agree(self, error: BaseException | None) -> None:
        """A collective check-point: every rank says whether it failed (``error``); if any did, every rank raises
        the first failure as a :class:`RankFailure`. One process re-raises its own error unchanged."""
        if not self.distributed:
            if error is not None:
                raise error
            return
        reports = self.gather(None if error is None else str(error))
        for rank, message in enumerate(reports):
            if message is not None:
                raise RankFailure(message if rank == 0 else f"rank {rank} of {self.size}: {message}")


SINGLE_PROCESS = World()


def current_world() -> World:
    """The initialised default process group as a :class:`World`, else the single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return World(torch.distributed.get_rank(), torch.distributed.get_world_size(), torch.distributed.get_backend())
    return SINGLE_PROCESS


def join_world(device: str = "auto") -> World:
    """Join the process group ``torchrun`` set up (``env://``): ``nccl`` when CUDA is present and ``device`` is not
    ``cpu`` (each rank on GPU ``LOCAL_RANK``), else ``gloo``. Already joined: the current world."""
    if current_world().distributed:
        return current_world()
    if not torch.distributed.is_available():
        raise GroupccError("this torch build has no torch.distributed: expected a build with distributed support to run under torchrun")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo", init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    return current_world()


def leave_world() -> None:
    """Destroy the process group :func:`join_world` made (nothing without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
