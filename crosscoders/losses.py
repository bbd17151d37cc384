"""Training losses. Every loss has the signature
``loss(dictionary, acts_NBD, output, sparsity_coefficient) -> LossTerms`` (a loss ignores what it does not use), so
a trainer calls :func:`dictionary_loss` without special cases. ``sparsity_coefficient`` is the (warmed-up)
coefficient of the sparsity's penalty: ``λ`` of the L1 penalty, or of JumpReLU's L0 penalty.

All terms are in the dictionary's normalised units (inputs times ``s``) and averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .codes import Codes, jumprelu_l0, topk_codes
from .dictionary import Dictionary, DictionaryOutput

Tensor = torch.Tensor


@dataclass(frozen=True)
class LossTerms:
    """``total`` (what is minimised) and its named parts (scalar tensors)."""

    total: Tensor
    parts: dict[str, Tensor]


def residual(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput) -> Tensor:
    """``[N, B·d]``: ``s·a − s·â``, the reconstruction error in normalised units, blocks concatenated."""
    return (output.scaled_input_NBD - output.scaled_recon_NBD).flatten(1)


def l1_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, sparsity_coefficient: float) -> LossTerms:
    """``Σ_g ‖a_g − â_g‖² + λ Σ_i f_i Σ_g ‖W_dec[i, g]‖``."""
    mse = residual(dictionary, acts_NBD, output).pow(2).sum(1).mean()
    sparsity = output.codes.weighted_sum(dictionary.decoder_norms()).mean()
    return LossTerms(mse + sparsity_coefficient * sparsity, {"mse": mse, "l1": sparsity})


def topk_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, sparsity_coefficient: float) -> LossTerms:
    """``Σ_g ‖a_g − â_g‖² + α·AuxK`` (``sparsity_coefficient`` is unused: TopK is sparse by construction)."""
    error_NX = residual(dictionary, acts_NBD, output)
    mse = error_NX.pow(2).sum(1).mean()
    aux = aux_k_loss(dictionary, output.pre_NF, error_NX.detach())
    return LossTerms(mse + dictionary.config.aux_coefficient * aux, {"mse": mse, "aux": aux})


def jumprelu_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, sparsity_coefficient: float) -> LossTerms:
    """``Σ_g ‖a_g − â_g‖² + λ Σ_i H(pre_i − θ_i)`` (Rajamanoharan et al. 2024): the L0 penalty reaches the
    thresholds through the straight-through estimator of :func:`jumprelu_l0`, the reconstruction reaches them
    through that of :func:`groupcc.crosscoders.codes.jumprelu_codes`."""
    mse = residual(dictionary, acts_NBD, output).pow(2).sum(1).mean()
    l0 = jumprelu_l0(output.pre_NF, dictionary.threshold, dictionary.config.jumprelu_bandwidth).mean()
    return LossTerms(mse + sparsity_coefficient * l0, {"mse": mse, "l0_penalty": l0})


def matryoshka_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, sparsity_coefficient: float) -> LossTerms:
    """``(1/J) Σ_j Σ_g ‖a_g − â_g^{(m_j)}‖² + α·AuxK`` (Bussmann et al. 2025), where ``â^{(m)}`` decodes only the
    first ``m`` features, ``m_1 < ... < m_J = F`` the prefixes (``matryoshka_prefixes``): the first features must
    reconstruct on their own, so they learn general features and later ones refine them. AuxK reads the full
    reconstruction's error."""
    target_NX = output.scaled_input_NBD.flatten(1)
    prefix_recons = prefix_reconstructions(output.codes, dictionary.W_dec.flatten(1), dictionary.b_dec.flatten(),
                                           dictionary.config.matryoshka_prefixes)
    prefix_mses = torch.stack([(target_NX - recon).pow(2).sum(1).mean() for recon in prefix_recons])
    error_NX = residual(dictionary, acts_NBD, output)
    aux = aux_k_loss(dictionary, output.pre_NF, error_NX.detach())
    total = prefix_mses.mean() + dictionary.config.aux_coefficient * aux
    return LossTerms(total, {"mse": error_NX.pow(2).sum(1).mean(), "prefix_mse": prefix_mses.mean(), "aux": aux})


def prefix_reconstructions(codes: Codes, decoder_FX: Tensor, bias_X: Tensor, prefixes: tuple[int, ...]) -> list[Tensor]:
    """``[N, X]`` for each prefix ``m``: ``b + Σ_{i < m} f_i W_dec[i]``, built as cumulative sums of the decodes of
    the feature ranges ``[m_{j−1}, m_j)`` (a sparse code decodes each range with its weights masked)."""
    bounds = torch.tensor(prefixes, device=decoder_FX.device)
    if codes.is_sparse:
        level_M = torch.bucketize(codes.feature_ids, bounds, right=True)  # the range each stored value falls in
        pieces = [F.embedding_bag(codes.feature_ids, decoder_FX, codes.offsets, mode="sum",
                                  per_sample_weights=codes.values * (level_M == j)) for j in range(len(prefixes))]
    else:
        starts = (0, *prefixes[:-1])
        pieces = [codes.values[:, start:stop] @ decoder_FX[start:stop] for start, stop in zip(starts, prefixes)]
    recons, running = [], bias_X
    for piece in pieces:
        running = running + piece
        recons.append(running)
    return recons


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


LOSSES = {"l1": l1_loss, "topk": topk_loss, "batchtopk": topk_loss, "jumprelu": jumprelu_loss, "matryoshka": matryoshka_loss}


def dictionary_loss(dictionary: Dictionary, acts_NBD: Tensor, output: DictionaryOutput, sparsity_coefficient: float) -> LossTerms:
    """The loss of ``dictionary``'s sparsity type."""
    return LOSSES[dictionary.config.sparsity](dictionary, acts_NBD, output, sparsity_coefficient)
