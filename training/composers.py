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

#: Weight initialisations. ``paper``: as the paper's code does it. The MLP draws every matrix from
#: ``N(0, 1/fan_in)`` with the embeddings' fan-in taken as ``d_embed`` (``W_x = randn(|G|, e)/sqrt(e)``), in the
#: paper's order (``W_x, W_y, W, W_U`` after ``torch.manual_seed(seed)``), so the same seed gives the paper's
#: initial weights. The Transformer uses TransformerLens's GPT-2 initialisation, ``N(0, 0.8/sqrt(d_model))`` for
#: every weight matrix (biases are zero; ours has none). ``legacy``: the initialisation of groupcc before 0.2
#: (MLP embeddings ``N(0, 1)``, 16× larger than the paper's; Transformer ``N(0, 1/fan_in)``), kept to reproduce
#: older runs.
INITS = ("paper", "legacy")
MAX_WIDTH = 1 << 16  # any size beyond is a typo (a 65536-wide layer of 65536-wide inputs is 16 GB)


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
    init: str = "paper"  # see INITS

    def __post_init__(self):
        if self.arch not in COMPOSER_LAYERS:
            raise GroupccError(f"unknown architecture {self.arch!r}: expected one of {sorted(COMPOSER_LAYERS)}")
        if self.activation not in ACTIVATIONS:
            raise GroupccError(f"unknown activation {self.activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if self.init not in INITS:
            raise GroupccError(f"unknown initialisation {self.init!r}: expected one of {', '.join(INITS)}")
        for name in ("n_elements", "d_embed", "d_hidden", "d_model", "n_heads", "d_head", "d_mlp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
                raise GroupccError(f"{name} must be an integer between 1 and {MAX_WIDTH}, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _observed(hook: nn.Module) -> bool:
    """True when a forward hook is attached: hook points that only copy data are skipped otherwise."""
    return bool(hook._forward_hooks)


def _init(*shape: int, fan_in: int) -> nn.Parameter:
    """``N(0, 1/fan_in)``."""
    return nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))


def _normal(*shape: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


# The forward passes are written once, for parameters with a leading seed axis ``S`` (``[S, ...]``) and operands
# ``[S, N]``: a single model is the case ``S = 1`` (its parameters viewed as ``p[None]``), and
# :class:`groupcc.training.seed_batch.SeedBatch` trains several seeds at once through the same code.
def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[s, i] = table[s, index[s, i]]`` for ``table [S, n, ...]`` and ``index [S, N]``.

    One ``index_select`` on the flattened table (row ``s·n + index``): a row gather whose backward is ~20× faster
    on CPU than advanced indexing's scatter."""
    seeds, n = table.shape[:2]
    offsets = (torch.arange(seeds, device=index.device) * n)[:, None]
    flat = table.reshape(seeds * n, *table.shape[2:])
    return flat.index_select(0, (index + offsets).reshape(-1)).view(*index.shape, *table.shape[2:])


def mlp_tables(embed_a, embed_b, w_in) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_a = E_a W_top`` and ``W_b = E_b W_bot``: ``[S, |G|, d_hidden]`` each."""
    d_e = embed_a.shape[-1]
    return embed_a @ w_in[:, :d_e], embed_b @ w_in[:, d_e:]


def mlp_pre_activation(embed_a, embed_b, w_in, a, b) -> torch.Tensor:
    """``W [E_a[a]; E_b[b]] = W_a[a] + W_b[b]``: ``[S, N, d_hidden]``."""
    table_a, table_b = mlp_tables(embed_a, embed_b, w_in)
    return gather_rows(table_a, a) + gather_rows(table_b, b)


TRANSFORMER_ATTENTION_PARAMETERS = ("embed", "pos", "w_q", "w_k", "w_v", "w_o")


def transformer_attention(p: dict[str, torch.Tensor], a, b, d_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention output at the ``=`` position ``[S, N, d]`` and that position's embedding ``[S, d]``.

    ``p`` holds ``embed [S, |G|+1, d]``, ``pos [S, 3, d]``, ``w_q, w_k, w_v [S, heads, d, d_head]``,
    ``w_o [S, heads, d_head, d]``. With one layer the keys and values at positions 0 and 1 are fixed per element, so
    they are computed once per element (``[S, |G|, ...]`` tables, values already mapped through ``W_O``) and
    gathered: exactly the full model's output at ``=``, at a fraction of its cost."""
    n = p["embed"].shape[1] - 1
    x_a = p["embed"][:, :n] + p["pos"][:, 0:1]  # [S, |G|, d] residual at position 0 for every element
    x_b = p["embed"][:, :n] + p["pos"][:, 1:2]
    x_eq = p["embed"][:, n] + p["pos"][:, 2]  # [S, d]
    query = torch.einsum("sd,shde->she", x_eq, p["w_q"]) / math.sqrt(d_head)
    scores_a = torch.einsum("she,shde,snd->snh", query, p["w_k"], x_a)  # [S, |G|, heads]
    scores_b = torch.einsum("she,shde,snd->snh", query, p["w_k"], x_b)
    score_eq = torch.einsum("she,shde,sd->sh", query, p["w_k"], x_eq)
    ov = torch.einsum("shde,shef->shdf", p["w_v"], p["w_o"])
    out_a = torch.einsum("snd,shdf->snhf", x_a, ov)  # [S, |G|, heads, d]
    out_b = torch.einsum("snd,shdf->snhf", x_b, ov)
    out_eq = torch.einsum("sd,shdf->shf", x_eq, ov)
    scores = torch.stack([gather_rows(scores_a, a), gather_rows(scores_b, b), score_eq[:, None].expand(*a.shape, -1)], dim=-1)
    pattern = torch.softmax(scores, dim=-1)  # [S, N, heads, 3]
    # Weighted sums over the few heads as broadcasts: an einsum here becomes N tiny matmuls (one per pair).
    attn = (
        (pattern[..., 0, None] * gather_rows(out_a, a)).sum(-2)
        + (pattern[..., 1, None] * gather_rows(out_b, b)).sum(-2)
        + pattern[..., 2] @ out_eq
    )
    return attn, x_eq


class MLPComposer(nn.Module):
    """``logits = W_U σ(W [E_a[a]; E_b[b]])``, no biases.

    The first layer is a table lookup: ``W [E_a[a]; E_b[b]] = (E_a W_top)[a] + (E_b W_bot)[b]``, so the forward
    pass computes the two ``[|G|, d_hidden]`` tables once and gathers rows, instead of a matmul per pair.
    """

    def __init__(self, config: ComposerArchitecture):
        super().__init__()
        self.config = config
        n, d_e, d_h = config.n_elements, config.d_embed, config.d_hidden
        embed_fan_in = d_e if config.init == "paper" else 1
        self.embed_a = _init(n, d_e, fan_in=embed_fan_in)
        self.embed_b = _init(n, d_e, fan_in=embed_fan_in)
        self.w_in = _init(2 * d_e, d_h, fan_in=2 * d_e)
        self.unembed = _init(d_h, n, fan_in=d_h)
        self.act = ACTIVATIONS[config.activation]
        for name in COMPOSER_LAYERS["mlp"]:
            setattr(self, f"hook_{name}", nn.Identity())

    def input_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W_a = E_a W_top`` and ``W_b = E_b W_bot``: ``[|G|, d_hidden]`` each."""
        table_a, table_b = mlp_tables(self.embed_a[None], self.embed_b[None], self.w_in[None])
        return table_a[0], table_b[0]

    def hidden(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Post-activation hidden layer ``[N, d_hidden]``."""
        if _observed(self.hook_embed_a) or _observed(self.hook_embed_b):
            self.hook_embed_a(self.embed_a[a])
            self.hook_embed_b(self.embed_b[b])
        pre = mlp_pre_activation(self.embed_a[None], self.embed_b[None], self.w_in[None], a[None], b[None])[0]
        return self.hook_hidden(self.act(self.hook_hidden_pre(pre)))

    def logits_from_hidden(self, hidden: torch.Tensor, a=None, b=None) -> torch.Tensor:
        return hidden @ self.unembed

    def output_path_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of the hidden neurons through the output weights alone (for the MLP, all of them)."""
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
        if config.init == "paper":
            std = 0.8 / math.sqrt(d)  # TransformerLens: cfg.initializer_range for every W_*
            weight = lambda *shape, fan_in: _normal(*shape, std=std)  # noqa: E731
        else:
            weight = _init
        self.embed = weight(n + 1, d, fan_in=d)  # last token is "="
        self.pos = weight(3, d, fan_in=d)
        self.w_q = weight(h, d, dh, fan_in=d)
        self.w_k = weight(h, d, dh, fan_in=d)
        self.w_v = weight(h, d, dh, fan_in=d)
        self.w_o = weight(h, dh, d, fan_in=h * dh)
        self.w_in = weight(d, dm, fan_in=d)
        self.w_out = weight(dm, d, fan_in=dm)
        self.unembed = weight(d, n, fan_in=d)
        self.act = ACTIVATIONS[config.activation]
        for name in COMPOSER_LAYERS["transformer"]:
            setattr(self, f"hook_{name}", nn.Identity())

    def _residual_mid(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if _observed(self.hook_embed_a) or _observed(self.hook_embed_b):
            self.hook_embed_a(self.embed[a])
            self.hook_embed_b(self.embed[b])
        params = {name: getattr(self, name)[None] for name in TRANSFORMER_ATTENTION_PARAMETERS}
        attn, x_eq = transformer_attention(params, a[None], b[None], self.config.d_head)
        return self.hook_resid_mid(x_eq[0] + self.hook_attn_out(attn[0]))

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

    def output_path_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden @ W_out @ W_U``: the MLP neurons' direct contribution to the logits, without the attention and
        embedding path (the map the paper's excluded and restricted losses use)."""
        return hidden @ self.w_out @ self.unembed

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        hidden, resid = self._hidden_and_resid(a, b)
        return self.hook_resid_post(resid + hidden @ self.w_out) @ self.unembed


class SeedBatch(nn.Module):
    """Several composers of one architecture as one module, for training seeds together: every parameter of
    :func:`build_composer`'s model stacked along a leading seed axis ``[S, ...]`` (same names). ``forward(a, b)``
    takes ``[S, N]`` operands and returns logits ``[S, N, |G|]`` through the same code as a single model; slice
    ``s`` is exactly model ``s`` (:meth:`seed_weights`)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.config = models[0].config
        if any(model.config != self.config for model in models):
            raise GroupccError("a seed batch needs composers of one architecture")
        for name, _ in models[0].named_parameters():
            self.register_parameter(name, nn.Parameter(torch.stack([model.get_parameter(name).detach() for model in models])))
        self.act = ACTIVATIONS[self.config.activation]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "mlp":
            return self.act(mlp_pre_activation(self.embed_a, self.embed_b, self.w_in, a, b)) @ self.unembed
        params = {name: getattr(self, name) for name in TRANSFORMER_ATTENTION_PARAMETERS}
        attn, x_eq = transformer_attention(params, a, b, self.config.d_head)
        resid = x_eq[:, None] + attn
        return (resid + self.act(resid @ self.w_in) @ self.w_out) @ self.unembed

    def seed_weights(self, index: int) -> dict[str, torch.Tensor]:
        """Seed ``index``'s state dict (for :func:`build_composer`'s model), on the CPU."""
        return {name: parameter[index].detach().cpu().contiguous() for name, parameter in self.named_parameters()}


def build_composer(config: ComposerArchitecture) -> nn.Module:
    return {"mlp": MLPComposer, "transformer": TransformerComposer}[config.arch](config)
