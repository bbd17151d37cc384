"""The dictionary model: one implementation for the SAE and the group crosscoder (the SAE is its one-block case).

Shapes: ``N`` inputs, ``B`` blocks (``|G|`` for a crosscoder, 1 for an SAE; block 0 is the identity), ``d``
the block width, ``F`` features, ``R`` blocks read by the encoder (1, or ``B`` with ``encoder_reads="all"``).

Parameters live in *normalised units*: inputs are multiplied by ``s = input_scale``, chosen so that a block
has mean norm ``sqrt(d)``. With ``r`` running over the blocks the encoder reads::

    f   = σ( Σ_r W_enc[r]ᵀ (s·a_r − b_dec[r]) + b_enc )
    â_g = ( Σ_i f_i W_dec[i, g] + b_dec[g] ) / s

so a dictionary always maps raw activations to raw reconstructions. (Subtracting ``b_dec`` before encoding is a
reparametrisation of ``b_enc``; DESIGN.md writes the crosscoder without it.) :meth:`Dictionary.fold_input_scale`
moves ``s`` into the weights for export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .batch_statistics import ONE_PROCESS, OneProcess
from .codes import Codes, batch_topk_codes, jumprelu_codes, relu_codes, threshold_codes, topk_codes
from .config import BATCH_THRESHOLD_SPARSITIES, DictionaryConfig
from .errors import DictionaryError

Tensor = torch.Tensor


@dataclass(frozen=True)
class DictionaryOutput:
    """What a forward pass returns: the codes, the reconstruction ``[N, B, d]`` in normalised units
    (``s·â``, what the losses compare with ``s·a``), the input scale ``s``, the encoder pre-activations
    ``[N, F]`` (the AuxK loss reads them) and the scaled input ``s·a`` ``[N, B, d]`` (computed once for the
    encoder and the losses)."""

    codes: Codes
    scaled_recon_NBD: Tensor
    input_scale: Tensor
    pre_NF: Tensor
    scaled_input_NBD: Tensor

    @property
    def recon_NBD(self) -> Tensor:
        """The reconstruction ``â`` ``[N, B, d]`` in raw units."""
        return self.scaled_recon_NBD / self.input_scale


class Dictionary(nn.Module):
    """A sparse autoencoder (``n_blocks = 1``) or a group crosscoder.

    Parameters: ``W_enc`` ``[R, d, F]``, ``b_enc`` ``[F]``, ``W_dec`` ``[F, B, d]``, ``b_dec`` ``[B, d]``; for
    ``jumprelu`` also ``threshold`` ``[F]`` (``θ_i ≥ 0``, in pre-activation units).
    Buffers: ``input_scale`` (``s``), ``threshold`` (a scalar: ``batchtopk``'s and ``matryoshka``'s inference
    threshold ``θ``; 0 until the first training batch sets it; unused by the others) and ``steps_since_fired``
    ``[F]``.

    Initialisation: decoder rows in random directions with norm ``decoder_init_norm`` (over all blocks),
    ``W_enc[r] = W_dec[:, r]ᵀ``, ``b_enc = 0``; with a unit-norm decoder (``config.unit_decoder``) the decoder
    rows are then scaled to norm 1 (the encoder keeps norm ``decoder_init_norm``). :meth:`initialise_from_data`
    sets ``s`` and ``b_dec``.
    """

    #: Where a training batch lives: this process, or data-parallel ranks (set by the trainer; see
    #: :mod:`groupcc.crosscoders.batch_statistics`). BatchTopK's selection and the batch statistics read it.
    batch_statistics: OneProcess = ONE_PROCESS

    def __init__(self, config: DictionaryConfig, seed: int = 0):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(config.n_features, config.n_blocks * config.d, generator=generator)
        decoder = directions * (config.decoder_init_norm / directions.norm(dim=1, keepdim=True))
        self.W_dec = nn.Parameter(decoder.reshape(config.n_features, config.n_blocks, config.d))
        # contiguous: the fused Adam kernel reads a parameter and its moments as flat arrays, and the moments
        # restored from a checkpoint are contiguous (a permuted layout would pair the wrong entries on resume)
        self.W_enc = nn.Parameter(self.W_dec.detach()[:, : config.read_blocks].permute(1, 2, 0).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(config.n_features))
        self.b_dec = nn.Parameter(torch.zeros(config.n_blocks, config.d))
        self.register_buffer("input_scale", torch.tensor(1.0))
        if config.sparsity == "jumprelu":
            self.threshold = nn.Parameter(torch.full((config.n_features,), config.jumprelu_init_threshold))
        else:
            self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("steps_since_fired", torch.zeros(config.n_features, dtype=torch.long))
        self.constrain()

    # ------------------------------------------------------------------ data
    def check_input(self, acts_NBD: Tensor) -> None:
        """Raise :class:`DictionaryError` unless ``acts_NBD`` is a floating ``[N, B, d]`` tensor of this dictionary."""
        expected = (self.config.n_blocks, self.config.d)
        if acts_NBD.ndim != 3 or tuple(acts_NBD.shape[1:]) != expected:
            raise DictionaryError(
                f"activations of shape {list(acts_NBD.shape)} do not fit this {self.config.kind}: expected "
                f"[N, {expected[0]}, {expected[1]}] (n_blocks = {expected[0]}, d = {expected[1]})"
            )
        if not acts_NBD.is_floating_point():
            raise DictionaryError(f"activations have dtype {acts_NBD.dtype}: expected a floating-point tensor")

    @torch.no_grad()
    def initialise_from_data(self, sample_NBD: Tensor, mean_norm: float | None = None) -> None:
        """Set ``s = sqrt(d) / mean_norm`` (``mean_norm``: the mean norm of a block over the data, measured on
        the sample when not given) and ``b_dec`` to the per-block mean of the scaled sample."""
        self.check_input(sample_NBD)
        sample = sample_NBD.to(self.b_dec.device, torch.float32)
        if not torch.isfinite(sample).all():
            raise DictionaryError("activations contain NaN or inf: expected finite values")
        if mean_norm is None:
            mean_norm = sample.norm(dim=-1).mean().item()
        if not 0 < mean_norm < math.inf:
            raise DictionaryError(f"activations have mean norm {mean_norm}: expected a finite positive mean norm")
        self.input_scale.fill_(math.sqrt(self.config.d) / mean_norm)
        self.b_dec.copy_(sample.mean(0) * self.input_scale)

    # ------------------------------------------------------------------ model
    def pre_activations(self, acts_NBD: Tensor) -> Tensor:
        """``[N, F]``: ``Σ_r W_enc[r]ᵀ (s·a_r − b_dec[r]) + b_enc``, computed as ``W_encᵀ(s·a) + (b_enc − W_encᵀ b_dec)``
        so that the gradient of ``b_dec`` through the encoder costs a vector product, not a batch of them."""
        self.check_input(acts_NBD)
        return self._pre_activations_scaled(acts_NBD[:, : self.config.read_blocks] * self.input_scale)

    def _pre_activations_scaled(self, scaled_NBD: Tensor) -> Tensor:
        """:meth:`pre_activations` of inputs already scaled by ``s`` (the first ``R`` blocks are read)."""
        read = self.config.read_blocks
        encoder = self.W_enc.flatten(0, 1)
        bias_F = self.b_enc - self.b_dec[:read].flatten() @ encoder
        return torch.addmm(bias_F, scaled_NBD[:, :read].flatten(1), encoder)

    def encode(self, acts_NBD: Tensor) -> Codes:
        """Codes ``f = σ(pre)``; ``batchtopk`` and ``matryoshka`` use their batch top-k in training and the
        threshold ``θ`` otherwise."""
        return self._activate(self.pre_activations(acts_NBD))

    def decode(self, codes: Codes) -> Tensor:
        """``[N, B, d]``: ``â_g = (Σ_i f_i W_dec[i, g] + b_dec[g]) / s`` (raw units)."""
        return self.decode_scaled(codes) / self.input_scale

    def decode_scaled(self, codes: Codes) -> Tensor:
        """``[N, B, d]``: ``s·â_g = Σ_i f_i W_dec[i, g] + b_dec[g]`` (normalised units)."""
        recon = codes.decode(self.W_dec.flatten(1), bias_X=self.b_dec.flatten())
        return recon.unflatten(1, (self.config.n_blocks, self.config.d))

    def forward(self, acts_NBD: Tensor) -> DictionaryOutput:
        self.check_input(acts_NBD)
        scaled_NBD = acts_NBD * self.input_scale
        pre_NF = self._pre_activations_scaled(scaled_NBD)
        codes = self._activate(pre_NF)
        return DictionaryOutput(codes, self.decode_scaled(codes), self.input_scale, pre_NF, scaled_NBD)

    def _activate(self, pre_NF: Tensor) -> Codes:
        sparsity, k = self.config.sparsity, self.config.k
        if sparsity == "l1":
            return relu_codes(pre_NF)
        if sparsity == "topk":
            return topk_codes(pre_NF, k)
        if sparsity == "jumprelu" and self.training:
            return jumprelu_codes(pre_NF, self.threshold, self.config.jumprelu_bandwidth)
        if self.training:
            return batch_topk_codes(pre_NF, k, self.batch_statistics)
        return threshold_codes(pre_NF, self.threshold)

    def decoder_norms(self) -> Tensor:
        """``[F]``: ``Σ_g ‖W_dec[i, g]‖``, the weight of feature ``i`` in the L1 penalty (normalised units)."""
        return self.W_dec.norm(dim=-1).sum(-1)

    # ------------------------------------------------------------------ constraints
    @torch.no_grad()
    def remove_parallel_decoder_gradient(self) -> None:
        """With a unit-norm decoder (``config.unit_decoder``), before a step: ``∇_i ← ∇_i − (∇_i·ŵ_i) ŵ_i`` for each
        decoder row ``ŵ_i`` (blocks concatenated), so that the step moves the row along the unit sphere to first
        order (dictionary_learning's ``ConstrainedAdam``; sparsify does the same)."""
        if not self.config.unit_decoder or self.W_dec.grad is None:
            return
        rows_FX, grad_FX = self.W_dec.flatten(1), self.W_dec.grad.flatten(1)
        grad_FX.sub_(rows_FX * (grad_FX * rows_FX).sum(1, keepdim=True))

    @torch.no_grad()
    def constrain(self) -> None:
        """After a step: decoder rows back to unit norm (``config.unit_decoder``) and JumpReLU thresholds to
        ``θ ≥ 0`` (so that a code is ``ReLU(pre)`` above its threshold)."""
        if self.config.unit_decoder:
            rows_FX = self.W_dec.flatten(1)
            rows_FX.div_(rows_FX.norm(dim=1, keepdim=True).clamp_min(1e-12))
        if self.config.sparsity == "jumprelu":
            self.threshold.clamp_(min=0.0)

    # ------------------------------------------------------------------ training statistics
    def dead_latents(self) -> Tensor:
        """``[F]`` bool: features that have not fired for ``dead_after_steps`` training steps."""
        return self.steps_since_fired >= self.config.dead_after_steps

    @torch.no_grad()
    def record_batch(self, codes: Codes) -> None:
        """After a training step: count steps since each feature last fired and, for ``batchtopk`` and
        ``matryoshka``, move ``θ`` towards the smallest activation the batch kept: ``θ ← m·θ + (1 − m)·min_kept``
        (the first batch sets it)."""
        batch = self.batch_statistics
        self.steps_since_fired.add_(1).masked_fill_(batch.any(codes.fired()), 0)
        if self.config.sparsity not in BATCH_THRESHOLD_SPARSITIES:
            return
        smallest = codes.smallest_positive()
        if batch.size > 1:  # every rank takes part, with +inf when it kept nothing
            smallest = batch.minimum(self.threshold.new_tensor(float("inf")) if smallest is None else smallest)
            smallest = smallest if torch.isfinite(smallest) else None
        if smallest is not None:
            momentum = self.config.threshold_momentum if self.threshold > 0 else 0.0
            self.threshold.mul_(momentum).add_((1 - momentum) * smallest)

    @torch.no_grad()
    def calibrate_threshold(self, chunks, max_inputs: int) -> float:
        """Set ``batchtopk``'s / ``matryoshka``'s inference threshold so that, on the ``n ≤ max_inputs`` inputs of
        ``chunks`` (``[n_c, B, d]`` tensors), exactly ``n·k`` pre-activations exceed it (barring ties): ``θ`` is
        midway between the ``(n·k)``-th and the ``(n·k + 1)``-th largest pre-activation (0 if that is negative, as
        codes are ReLUs), so that their mean L0 is ``k``; midway, so that rounding (e.g. once the input scale is
        folded into the weights) does not move a pre-activation across it. This is
        what BatchTopK keeps, over many batches at once; the moving average of per-batch minima that training
        keeps lags the encoder. The ``max_inputs·k + 1`` largest values seen so far are kept, so memory does not
        grow with the number of chunks. Returns the new ``θ``."""
        keep, largest, n_inputs = max_inputs * self.config.k + 1, None, 0
        for chunk in chunks:
            pre = self.pre_activations(chunk.to(self.b_dec.device)).flatten()
            n_inputs += len(chunk)
            pool = pre if largest is None else torch.cat([largest, pre])
            largest = pool.topk(min(keep, pool.numel()), sorted=False).values
        if largest is None or n_inputs > max_inputs:
            raise DictionaryError(f"{n_inputs} inputs to calibrate the threshold on: expected between 1 and {max_inputs}")
        rank = n_inputs * self.config.k + 1
        quantile = largest.topk(rank).values[-2:].mean().item() if largest.numel() >= rank else 0.0
        self.threshold.fill_(max(quantile, 0.0))
        return self.threshold.item()

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def fold_input_scale(self) -> "Dictionary":
        """An equivalent dictionary with ``s = 1``: ``W_enc ← s·W_enc``, ``W_dec ← W_dec/s``, ``b_dec ← b_dec/s``
        (codes and reconstructions unchanged up to rounding); its weights then read raw activations directly.
        Pre-activations do not change (``s·W_encᵀ(a − b_dec/s) = W_encᵀ(s·a − b_dec)``), so thresholds do not."""
        folded = Dictionary(self.config).to(self.b_dec.device)
        folded.load_state_dict(self.state_dict())
        scale = self.input_scale
        folded.W_enc.mul_(scale)
        folded.W_dec.div_(scale)
        folded.b_dec.div_(scale)
        folded.input_scale.fill_(1.0)
        return folded.train(self.training)
