"""Composer models: networks that learn a word ``w(a, b)`` (by default the product ``a·b``) in a finite group
(Chughtai, Chan & Nanda 2023, "A Toy Model of Universality").

Both models take two element indices ``a, b`` (``[N]`` long tensors) and return logits ``[N, |G|]``.
Intermediate activations pass through named ``nn.Identity`` hook points (``hook_*``), so a forward hook on
``model.hook_hidden`` (say) reads that layer; :data:`COMPOSER_LAYERS` lists them per architecture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from groupcc.errors import GroupccError

ACTIVATIONS = {
    "relu": torch.relu,
    "gelu": nn.functional.gelu,
    "quadratic": torch.square,
}

#: Hook points each architecture exposes (all at the "=" position for the Transformer).
COMPOSER_LAYERS = {
    "mlp": ["embed_a", "embed_b", "hidden_pre", "hidden"],
    "transformer": ["embed_a", "embed_b", "attn_out", "resid_mid", "hidden_pre", "hidden", "resid_post"],
}


@dataclass
class ComposerArchitecture:
    """Sizes of a composer; the defaults are the paper's."""

    arch: str = "mlp"  # "mlp" or "transformer"
    n_elements: int = 0  # |G|
    activation: str = "relu"
    # MLP
    d_embed: int = 256
    d_hidden: int = 128
    # Transformer
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512

    def __post_init__(self):
        if self.arch not in COMPOSER_LAYERS:
            raise GroupccError(f"unknown architecture {self.arch!r}: expected one of {sorted(COMPOSER_LAYERS)}")
        if self.activation not in ACTIVATIONS:
            raise GroupccError(f"unknown activation {self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if self.n_elements < 1:
            raise GroupccError(f"a composer needs n_elements >= 1, got {self.n_elements}")

    def to_dict(self) -> dict:
        return asdict(self)


def _observed(hook: nn.Module) -> bool:
    """True when a forward hook is attached: hook points that only copy data are skipped otherwise."""
    return bool(hook._forward_hooks)


def _init(*shape: int, fan_in: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))


class MLPComposer(nn.Module):
    """``logits = W_U σ(W [E_a[a]; E_b[b]])``, no biases.

    The first layer is a table lookup: ``W [E_a[a]; E_b[b]] = (E_a W_top)[a] + (E_b W_bot)[b]``, so the forward
    pass computes the two ``[|G|, d_hidden]`` tables once and gathers rows, instead of a matmul per pair.
    """

    def __init__(self, config: ComposerArchitecture):
        super().__init__()
        self.config = config
        n, d_e, d_h = config.n_elements, config.d_embed, config.d_hidden
        self.embed_a = _init(n, d_e, fan_in=1)
        self.embed_b = _init(n, d_e, fan_in=1)
        self.w_in = _init(2 * d_e, d_h, fan_in=2 * d_e)
        self.unembed = _init(d_h, n, fan_in=d_h)
        self.act = ACTIVATIONS[config.activation]
        for name in COMPOSER_LAYERS["mlp"]:
            setattr(self, f"hook_{name}", nn.Identity())

    def input_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_a = E_a W_top`` and ``W_b = E_b W_bot``: ``[|G|, d_hidden]`` each."""
        d_e = self.config.d_embed
        return self.embed_a @ self.w_in[:d_e], self.embed_b @ self.w_in[d_e:]

    def hidden(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Post-activation hidden layer ``[N, d_hidden]``."""
        if _observed(self.hook_embed_a) or _observed(self.hook_embed_b):
            self.hook_embed_a(self.embed_a[a])
            self.hook_embed_b(self.embed_b[b])
        table_a, table_b = self.input_tables()
        # index_select: a row gather whose backward is ~20x faster on CPU than advanced indexing's scatter.
        pre = self.hook_hidden_pre(table_a.index_select(0, a) + table_b.index_select(0, b))
        return self.hook_hidden(self.act(pre))

    def logits_from_hidden(self, hidden: torch.Tensor, a=None, b=None) -> torch.Tensor:
        return hidden @ self.unembed

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.logits_from_hidden(self.hidden(a, b))


class TransformerComposer(nn.Module):
    """One-layer Transformer on ``[a, b, =]``: learned positions, attention with ``n_heads`` heads, a ReLU
    MLP, no LayerNorm, biases zero; logits at the last position.

    With one layer, the logits depend only on the ``=`` position's residual stream, and its attention reads
    keys and values of embeddings that are fixed per element. So the forward pass builds per-element tables
    (keys, values through ``W_O``) once and gathers them: exactly the full model's output at ``=``, at a
    fraction of its cost.
    """

    def __init__(self, config: ComposerArchitecture):
        super().__init__()
        self.config = config
        n, d, h, dh, dm = config.n_elements, config.d_model, config.n_heads, config.d_head, config.d_mlp
        self.embed = _init(n + 1, d, fan_in=d)  # last token is "="
        self.pos = _init(3, d, fan_in=d)
        self.w_q = _init(h, d, dh, fan_in=d)
        self.w_k = _init(h, d, dh, fan_in=d)
        self.w_v = _init(h, d, dh, fan_in=d)
        self.w_o = _init(h, dh, d, fan_in=h * dh)
        self.w_in = _init(d, dm, fan_in=d)
        self.w_out = _init(dm, d, fan_in=dm)
        self.unembed = _init(d, n, fan_in=d)
        self.act = ACTIVATIONS[config.activation]
        for name in COMPOSER_LAYERS["transformer"]:
            setattr(self, f"hook_{name}", nn.Identity())

    def _residual_mid(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = self.config.n_elements
        x_a = self.embed[:n] + self.pos[0]  # [|G|, d] residual at position 0 for every element
        x_b = self.embed[:n] + self.pos[1]
        x_eq = self.embed[n] + self.pos[2]  # [d]
        if _observed(self.hook_embed_a) or _observed(self.hook_embed_b):
            self.hook_embed_a(self.embed[a])
            self.hook_embed_b(self.embed[b])
        query = torch.einsum("d,hde->he", x_eq, self.w_q) / math.sqrt(self.config.d_head)
        scores_a = torch.einsum("he,hde,nd->nh", query, self.w_k, x_a)  # [|G|, heads]
        scores_b = torch.einsum("he,hde,nd->nh", query, self.w_k, x_b)
        score_eq = torch.einsum("he,hde,d->h", query, self.w_k, x_eq)
        # Value of each source position, already mapped through W_O: [|G|, heads, d] (and [heads, d] for "=").
        ov = torch.einsum("hde,hef->hdf", self.w_v, self.w_o)
        out_a = torch.einsum("nd,hdf->nhf", x_a, ov)
        out_b = torch.einsum("nd,hdf->nhf", x_b, ov)
        out_eq = torch.einsum("d,hdf->hf", x_eq, ov)
        scores = torch.stack([scores_a.index_select(0, a), scores_b.index_select(0, b), score_eq.expand(a.shape[0], -1)], dim=-1)
        pattern = torch.softmax(scores, dim=-1)  # [N, heads, 3]
        heads = self.config.n_heads
        attn = (
            torch.einsum("nh,nhf->nf", pattern[..., 0], out_a.flatten(1).index_select(0, a).unflatten(1, (heads, -1)))
            + torch.einsum("nh,nhf->nf", pattern[..., 1], out_b.flatten(1).index_select(0, b).unflatten(1, (heads, -1)))
            + torch.einsum("nh,hf->nf", pattern[..., 2], out_eq)
        )
        attn = self.hook_attn_out(attn)
        return self.hook_resid_mid(x_eq + attn)

    def hidden(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Post-activation MLP neurons at the ``=`` position ``[N, d_mlp]``."""
        return self._hidden_and_resid(a, b)[0]

    def _hidden_and_resid(self, a, b):
        resid = self._residual_mid(a, b)
        pre = self.hook_hidden_pre(resid @ self.w_in)
        return self.hook_hidden(self.act(pre)), resid

    def logits_from_hidden(self, hidden: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logits with the MLP neurons replaced by ``hidden`` (the attention path is recomputed)."""
        resid = self._residual_mid(a, b)
        return self.hook_resid_post(resid + hidden @ self.w_out) @ self.unembed

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        hidden, resid = self._hidden_and_resid(a, b)
        return self.hook_resid_post(resid + hidden @ self.w_out) @ self.unembed


def build_composer(config: ComposerArchitecture) -> nn.Module:
    return {"mlp": MLPComposer, "transformer": TransformerComposer}[config.arch](config)
