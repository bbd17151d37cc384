"""Feature activations (codes) and the sparsity functions σ that produce them from encoder pre-activations.

A TopK code has only ``k`` non-zero features per input, so it is kept sparse and decoded by gathering the
``k`` decoder rows it uses (``embedding_bag``) instead of a dense ``[N, F] @ [F, X]`` product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch_statistics import ONE_PROCESS, OneProcess

Tensor = torch.Tensor


@dataclass(frozen=True)
class Codes:
    """Feature activations ``f`` of ``N`` inputs over ``n_features`` features, dense or sparse.

    Dense: ``values`` is ``[N, F]``; ``feature_ids`` and ``offsets`` are ``None``.
    Sparse: the ``M`` stored ``(input, feature)`` pairs grouped by input: ``values`` ``[M]``,
    ``feature_ids`` ``[M]``, and input ``n`` owns entries ``offsets[n]`` up to ``offsets[n + 1]`` (``M`` for the
    last input); ``offsets`` is ``[N]``. A stored value may be zero (it is then not counted as firing).
    """

    values: Tensor
    n_features: int
    feature_ids: Tensor | None = None
    offsets: Tensor | None = None

    @property
    def is_sparse(self) -> bool:
        return self.feature_ids is not None

    @property
    def n_inputs(self) -> int:
        return self.offsets.shape[0] if self.is_sparse else self.values.shape[0]

    def input_ids(self) -> Tensor:
        """``[M]``: the input each stored value belongs to (sparse codes only)."""
        counts = torch.diff(self.offsets, append=self.offsets.new_tensor([self.values.shape[0]]))
        return torch.repeat_interleave(torch.arange(self.n_inputs, device=self.values.device), counts)

    def to_dense(self) -> Tensor:
        """``[N, F]`` (differentiable)."""
        if not self.is_sparse:
            return self.values
        dense = self.values.new_zeros(self.n_inputs, self.n_features)
        return dense.index_put((self.input_ids(), self.feature_ids), self.values)

    def decode(self, decoder_FX: Tensor, bias_X: Tensor | None = None) -> Tensor:
        """``[N, X]``: ``Σ_i f_i decoder[i] (+ bias)``; a sparse code reads only the decoder rows it uses."""
        if not self.is_sparse:
            return self.values @ decoder_FX if bias_X is None else torch.addmm(bias_X, self.values, decoder_FX)
        decoded = F.embedding_bag(self.feature_ids, decoder_FX, self.offsets, mode="sum", per_sample_weights=self.values)
        return decoded if bias_X is None else decoded + bias_X

    def weighted_sum(self, weights_F: Tensor) -> Tensor:
        """``[N]``: ``Σ_i f_i w_i``."""
        return self.decode(weights_F[:, None])[:, 0]

    def firing_counts(self) -> Tensor:
        """``[F]`` (int64): on how many of the inputs each feature is positive."""
        if not self.is_sparse:
            return (self.values > 0).sum(0)
        return torch.bincount(self.feature_ids[self.values > 0], minlength=self.n_features)

    def fired(self) -> Tensor:
        """``[F]`` bool: whether each feature is positive on any input (cheaper than :meth:`firing_counts`: the
        values are ``≥ 0``, so a feature fired iff the sum of its values is positive)."""
        if not self.is_sparse:
            return (self.values > 0).any(0)
        return self.values.new_zeros(self.n_features).index_add_(0, self.feature_ids, self.values.detach()) > 0

    def l0(self) -> Tensor:
        """``[N]`` (int64): the number of positive features of each input."""
        if not self.is_sparse:
            return (self.values > 0).sum(1)
        return torch.bincount(self.input_ids()[self.values > 0], minlength=self.n_inputs)

    def smallest_positive(self) -> Tensor | None:
        """The smallest positive stored value (a 0-dim tensor), or ``None`` when no value is positive."""
        positive = self.values[self.values > 0]
        return positive.min() if positive.numel() else None


def relu_codes(pre_NF: Tensor) -> Codes:
    """``f = ReLU(pre)``, dense (the L1-penalised dictionary)."""
    return Codes(torch.relu(pre_NF), pre_NF.shape[1])


#: TopK codes with at least this fraction of the features active are kept dense: decoding ``[N, F] @ [F, X]`` as
#: one matrix product then beats gathering ``k`` rows per input (measured on the CPU, d = 128, batch 1024: at
#: F = 256 a dense step is 1.27x faster at k = 32 (k/F = 1/8) but 0.84x at k = 8; at F = 1024, k = 32, 0.81x).
DENSE_TOPK_FRACTION = 1 / 8


def topk_codes(pre_NF: Tensor, k: int) -> Codes:
    """``f = ReLU(pre)`` on the ``k`` largest pre-activations of each input, zero elsewhere: sparse, or dense when
    ``k/F`` is at least :data:`DENSE_TOPK_FRACTION` (the same values either way)."""
    n_inputs, n_features = pre_NF.shape
    values_NK, ids_NK = pre_NF.topk(k, dim=1, sorted=False)
    if k >= DENSE_TOPK_FRACTION * n_features:
        return Codes(torch.zeros_like(pre_NF).scatter(1, ids_NK, torch.relu(values_NK)), n_features)
    offsets = torch.arange(0, n_inputs * k, k, device=pre_NF.device)
    return Codes(torch.relu(values_NK).flatten(), n_features, ids_NK.flatten(), offsets)


def batch_topk_codes(pre_NF: Tensor, k: int, batch: OneProcess = ONE_PROCESS) -> Codes:
    """``f = ReLU(pre)`` on the ``N·k`` largest pre-activations of the whole batch, zero elsewhere (sparse). When
    the batch is split over data-parallel ranks (``batch``), of the whole global batch: this rank keeps its values
    at or above the global cut (:mod:`groupcc.crosscoders.batch_statistics`)."""
    count = pre_NF.shape[0] * k
    cut = batch.top_count_cut(pre_NF.detach().flatten(), count)
    if cut is None:
        flat_ids = pre_NF.flatten().topk(count, sorted=False).indices.sort().values
    else:
        flat_ids = torch.nonzero(pre_NF.detach().flatten() >= cut).flatten()
    return _codes_at(pre_NF, flat_ids)


def threshold_codes(pre_NF: Tensor, threshold: Tensor) -> Codes:
    """``f = ReLU(pre) · 1[pre > θ]`` (sparse), ``θ`` a scalar or one per feature ``[F]``: JumpReLU at inference,
    BatchTopK and Matryoshka at inference (so that codes do not depend on the batch). Not differentiable in ``θ``:
    training JumpReLU uses :func:`jumprelu_codes`."""
    flat_ids = torch.nonzero((pre_NF > threshold).flatten()).flatten()
    return _codes_at(pre_NF, flat_ids)


def jumprelu_codes(pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Codes:
    """``f = pre · 1[pre > θ]`` (dense; ``θ ≥ 0``, so ``f = ReLU(pre)·1[pre > θ]``), differentiable in ``θ``
    through the straight-through estimator of Rajamanoharan et al. (2024), see :class:`_JumpReLU`."""
    return Codes(_JumpReLU.apply(pre_NF, threshold_F, bandwidth), pre_NF.shape[1])


def jumprelu_l0(pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
    """``[N]``: ``Σ_i H(pre_i − θ_i)``, the number of active features, with the straight-through gradient
    ``∂H/∂θ := −(1/ε)·K((pre − θ)/ε)`` (see :class:`_Step`); no gradient reaches ``pre``."""
    return _Step.apply(pre_NF, threshold_F, bandwidth).sum(1)


def _rectangle(u: Tensor) -> Tensor:
    """``K(u) = 1[|u| < 1/2]``, the kernel of the straight-through estimators."""
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """``f = pre · H(pre − θ)``. Gradients: ``∂f/∂pre = H(pre − θ)`` (exact away from the jump);
    ``∂f/∂θ := −(θ/ε)·K((pre − θ)/ε)``: the jump of height ``θ`` at ``pre = θ`` smeared over a window of width
    ``ε``, so that the expected gradient over the data estimates the gradient of the expected loss."""

    @staticmethod
    def forward(ctx, pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_NF * (pre_NF > threshold_F)

    @staticmethod
    def backward(ctx, grad_NF: Tensor):
        pre_NF, threshold_F = ctx.saved_tensors
        window = _rectangle((pre_NF - threshold_F) / ctx.bandwidth)
        grad_threshold = (grad_NF * window).sum(0) * (-threshold_F / ctx.bandwidth)
        return grad_NF * (pre_NF > threshold_F), grad_threshold, None


class _Step(torch.autograd.Function):
    """``H(pre − θ)`` with ``∂H/∂pre = 0`` and ``∂H/∂θ := −(1/ε)·K((pre − θ)/ε)`` (the L0 penalty moves only
    the thresholds)."""

    @staticmethod
    def forward(ctx, pre_NF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_NF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_NF > threshold_F).to(pre_NF.dtype)

    @staticmethod
    def backward(ctx, grad_NF: Tensor):
        pre_NF, threshold_F = ctx.saved_tensors
        window = _rectangle((pre_NF - threshold_F) / ctx.bandwidth)
        return None, (grad_NF * window).sum(0) / -ctx.bandwidth, None


def _codes_at(pre_NF: Tensor, flat_ids: Tensor) -> Codes:
    """Sparse codes ``ReLU(pre)`` at the given increasing flat indices into ``pre_NF``."""
    n_inputs, n_features = pre_NF.shape
    input_ids = torch.div(flat_ids, n_features, rounding_mode="floor")
    counts = torch.bincount(input_ids, minlength=n_inputs)
    offsets = torch.cumsum(counts, 0) - counts
    values = torch.relu(pre_NF.flatten()[flat_ids])
    return Codes(values, n_features, flat_ids - input_ids * n_features, offsets)
