"""The configuration of a dictionary: a sparse autoencoder (SAE) or a group crosscoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import DictionaryError

KINDS = ("sae", "crosscoder")
SPARSITIES = ("l1", "topk", "batchtopk")
ENCODER_READS = ("identity", "all")
SAE_INPUTS = ("identity", "all")


@dataclass(frozen=True)
class DictionaryConfig:
    """Everything that fixes a dictionary's architecture and its loss.

    Inputs have shape ``[N, n_blocks, d]``. A crosscoder has one block per group element (block 0 is the
    identity); an SAE is the one-block case (``n_blocks = 1``).

    Attributes:
        kind: ``"sae"`` or ``"crosscoder"``.
        d: width of one block.
        n_features: number of dictionary features ``F``.
        n_blocks: ``B``: 1 for an SAE, ``|G|`` for a group crosscoder.
        sparsity: ``"l1"`` (ReLU with the decoder-norm-weighted L1 penalty), ``"topk"`` (the ``k`` largest
            features of each input) or ``"batchtopk"`` (the ``N·k`` largest of a batch of ``N`` in training, a
            threshold at inference).
        k: active features per input (``topk``), on average (``batchtopk``); unused by ``l1``.
        l1_coefficient: ``λ`` of the penalty ``λ Σ_i f_i Σ_g ‖W_dec[i, g]‖`` (``l1`` only).
        encoder_reads: what a crosscoder's encoder reads: ``"identity"`` (block 0 only) or ``"all"`` blocks.
        sae_input: what an SAE is trained, evaluated and analysed on when the activations have several blocks:
            ``"identity"`` (block 0, the untransformed inputs) or ``"all"`` (every block as its own input).
        aux_k: at most this many dead features reconstruct the residual in the AuxK loss (Gao et al. 2024 use
            a power of two near ``d/2``); ``topk``/``batchtopk`` only.
        aux_coefficient: weight ``α`` of the AuxK loss.
        dead_after_steps: a feature that has not fired for this many training steps is dead.
        threshold_momentum: ``batchtopk``'s inference threshold is an exponential moving average, with this
            momentum, of the smallest activation kept in each training batch.
        decoder_init_norm: norm of each decoder row (over all blocks) at initialisation.
        group: name of the group whose elements index the blocks (a record for the analysis).
    """

    kind: str
    d: int
    n_features: int
    n_blocks: int = 1
    sparsity: str = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    encoder_reads: str = "identity"
    sae_input: str = "identity"
    aux_k: int = 256
    aux_coefficient: float = 1 / 32
    dead_after_steps: int = 1000
    threshold_momentum: float = 0.99
    decoder_init_norm: float = 0.1
    group: str | None = None

    def __post_init__(self):
        _expect_choice("kind", self.kind, KINDS)
        _expect_choice("sparsity", self.sparsity, SPARSITIES)
        _expect_choice("encoder_reads", self.encoder_reads, ENCODER_READS)
        _expect_choice("sae_input", self.sae_input, SAE_INPUTS)
        for name in ("d", "n_features", "n_blocks", "k", "aux_k", "dead_after_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DictionaryError(f"{name} = {value!r}: expected a positive integer")
        for name in ("l1_coefficient", "aux_coefficient", "decoder_init_norm"):
            if not getattr(self, name) >= 0:
                raise DictionaryError(f"{name} = {getattr(self, name)!r}: expected a number >= 0")
        if not 0 <= self.threshold_momentum < 1:
            raise DictionaryError(f"threshold_momentum = {self.threshold_momentum!r}: expected a number in [0, 1)")
        if self.kind == "sae" and self.n_blocks != 1:
            raise DictionaryError(f"an SAE has one block, got n_blocks = {self.n_blocks}: use kind 'crosscoder'")
        if self.sparsity != "l1" and self.k > self.n_features:
            raise DictionaryError(f"k = {self.k} exceeds n_features = {self.n_features}: expected k <= n_features")

    @property
    def read_blocks(self) -> int:
        """``R``: the number of blocks the encoder reads (1, or ``B`` when it reads all of them)."""
        return self.n_blocks if self.encoder_reads == "all" else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DictionaryConfig":
        """The inverse of :meth:`to_dict`; unknown or missing keys raise :class:`DictionaryError`."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DictionaryError(f"unknown dictionary config keys {unknown}: expected some of {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as err:
            raise DictionaryError(f"incomplete dictionary config {sorted(values)}: {err}") from None


def _expect_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DictionaryError(f"{name} = {value!r}: expected one of {', '.join(choices)}")
