"""Training losses. Every loss has the signature ``loss(dictionary, acts_NBD, output, l1_coefficient) -> LossTerms``
(a loss ignores what it does not use), so a trainer calls :func:`dictionary_loss` without special cases.

All terms are in the dictionary's normalised units (inputs times ``s``) and averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .codes import topk_codes
from .dictionary import Dictionary, DictionaryOutput

Tensor = torch.Tensor


@dataclass(frozen=True)
class LossTerms:
    """``total`` (what is minimised) and its named parts (scalar tensors)."""

    total: Tensor
    parts: dict[str, Tensor]


def residual(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput) -> Tensor:
    """``[N, B·d]``: ``s·a − s·â``, the reconstruction error in normalised units, blocks concatenated."""
    return (acts_NBD * dictionary.input_scale - output.scaled_recon_NBD).flatten(1)


def l1_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, l1_coefficient: float) -> LossTerms:
    """``Σ_g ‖a_g − â_g‖² + λ Σ_i f_i Σ_g ‖W_dec[i, g]‖``."""
    mse = residual(dictionary, acts_NBD, output).pow(2).sum(1).mean()
    sparsity = output.codes.weighted_sum(dictionary.decoder_norms()).mean()
    return LossTerms(mse + l1_coefficient * sparsity, {"mse": mse, "l1": sparsity})


def topk_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, l1_coefficient: float) -> LossTerms:
    """``Σ_g ‖a_g − â_g‖² + α·AuxK`` (``l1_coefficient`` is unused: TopK is sparse by construction)."""
    error_NX = residual(dictionary, acts_NBD, output)
    mse = error_NX.pow(2).sum(1).mean()
    aux = aux_k_loss(dictionary, output.pre_NF, error_NX.detach())
    return LossTerms(mse + dictionary.config.aux_coefficient * aux, {"mse": mse, "aux": aux})


def aux_k_loss(dictionary: Dictionary, pre_NF: Tensor, error_NX: Tensor) -> Tensor:
    """AuxK (Gao et al. 2024): the ``k_aux`` most active dead features of each input reconstruct the main
    reconstruction's error ``e`` without biases: ``mean_n ‖e_n − Σ_{i ∈ topk_aux(dead)} f_i W_dec[i]‖²``.
    Zero when no feature is dead, so dead features get a gradient that brings them back."""
    dead = dictionary.dead_latents()
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre_NF.new_zeros(())
    dead_pre_NF = pre_NF.masked_fill(~dead, float("-inf"))
    codes = topk_codes(dead_pre_NF, min(dictionary.config.aux_k, n_dead))
    aux_recon_NX = codes.decode(dictionary.W_dec.flatten(1))
    return (error_NX - aux_recon_NX).pow(2).sum(1).mean()


LOSSES = {"l1": l1_loss, "topk": topk_loss, "batchtopk": topk_loss}


def dictionary_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, l1_coefficient: float) -> LossTerms:
    """The loss of ``dictionary``'s sparsity type."""
    return LOSSES[dictionary.config.sparsity](dictionary, acts_NBD, output, l1_coefficient)
