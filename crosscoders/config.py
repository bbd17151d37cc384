"""The configuration of a dictionary: a sparse autoencoder (SAE) or a group crosscoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from groupcc.groups.limits import array_bytes, memory_refusal
from groupcc.groups.validation import check_number

from .errors import DictionaryError

KINDS = ("sae", "crosscoder")
SPARSITIES = ("l1", "topk", "batchtopk", "jumprelu", "matryoshka")
#: Sparsities whose training codes keep the ``N·k`` largest pre-activations of a batch and whose inference codes
#: compare with one threshold ``θ`` (estimated from the training data).
BATCH_THRESHOLD_SPARSITIES = ("batchtopk", "matryoshka")
#: Sparsities with a fixed number ``k`` of active features (per input or on average).
K_SPARSITIES = ("topk", "batchtopk", "matryoshka")
ENCODER_READS = ("identity", "all")
SAE_INPUTS = ("identity", "all")
#: Most features a dictionary may have (``n_features``, and the ``k`` and ``aux_k`` that count features): a
#: billion features of width 1 already need 8 GB of weights; the memory estimate (:attr:`DictionaryConfig.parameter_bytes`)
#: bounds the product with the width and the blocks.
MAX_FEATURES = 10**9


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
            features of each input), ``"batchtopk"`` (the ``N·k`` largest of a batch of ``N`` in training, a
            threshold at inference), ``"jumprelu"`` (a learned threshold per feature, trained with
            straight-through estimators and an L0 penalty) or ``"matryoshka"`` (BatchTopK whose loss averages the
            reconstructions of nested prefixes of the features).
        k: active features per input (``topk``), on average (``batchtopk``, ``matryoshka``); unused by ``l1`` and
            ``jumprelu``.
        l1_coefficient: ``λ`` of the penalty ``λ Σ_i f_i Σ_g ‖W_dec[i, g]‖`` (``l1`` only).
        l0_coefficient: ``λ`` of JumpReLU's penalty ``λ Σ_i 1[pre_i > θ_i]`` (``jumprelu`` only).
        jumprelu_bandwidth: ``ε``, the width of the rectangle kernel of the straight-through estimators of the
            threshold's gradient (``jumprelu`` only). Rajamanoharan et al. (2024) use 0.001 over long runs; Adam
            moves a threshold by about ``lr`` per step, and in a few thousand steps a wider window must catch
            enough pre-activations (S4 MLP, 3000 steps: L0 70 to 100 with 0.001, 16 with 0.05).
        jumprelu_init_threshold: every ``θ_i`` at initialisation (``jumprelu`` only).
        matryoshka_sizes: the nested prefix widths ``m_1 < m_2 < ... < F`` whose reconstructions the
            ``matryoshka`` loss averages (the last is ``n_features``; empty: ``F/16, F/4, F``).
        encoder_reads: what a crosscoder's encoder reads: ``"identity"`` (block 0 only) or ``"all"`` blocks.
        sae_input: what an SAE is trained, evaluated and analysed on when the activations have several blocks:
            ``"identity"`` (block 0, the untransformed inputs) or ``"all"`` (every block as its own input).
        aux_k: at most this many dead features reconstruct the residual in the AuxK loss (Gao et al. 2024 use
            a power of two near ``d/2``; a value above ``n_features`` acts as ``n_features``); ``topk``/``batchtopk`` only.
        aux_coefficient: weight ``α`` of the AuxK loss.
        dead_after_steps: a feature that has not fired for this many training steps is dead.
        threshold_momentum: during training, ``batchtopk``'s and ``matryoshka``'s inference threshold is an
            exponential moving average, with this momentum, of the smallest activation kept in each batch (the
            trainer calibrates it on training inputs at the end).
        decoder_init_norm: norm of each decoder row (over all blocks) at initialisation.
        unit_norm_decoder: keep every decoder row at unit norm (over all blocks, in normalised units): the
            gradient's component along the row is removed before each step and the row renormalised after it.
            ``jumprelu`` always does (its L0 penalty does not see the scale of a code, so with a free decoder
            the encoder outgrows the thresholds: L0 stays near ``F/2``).
        group: name of the group whose elements index the blocks (a record for the analysis).
    """

    kind: str
    d: int
    n_features: int
    n_blocks: int = 1
    sparsity: str = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.1
    matryoshka_sizes: tuple[int, ...] = ()
    encoder_reads: str = "identity"
    sae_input: str = "identity"
    aux_k: int = 256
    aux_coefficient: float = 1 / 32
    dead_after_steps: int = 1000
    threshold_momentum: float = 0.99
    decoder_init_norm: float = 0.1
    unit_norm_decoder: bool = False
    group: str | None = None

    def __post_init__(self):
        _expect_choice("kind", self.kind, KINDS)
        _expect_choice("sparsity", self.sparsity, SPARSITIES)
        _expect_choice("encoder_reads", self.encoder_reads, ENCODER_READS)
        _expect_choice("sae_input", self.sae_input, SAE_INPUTS)
        for name, high in (("d", None), ("n_blocks", None), ("n_features", MAX_FEATURES), ("k", MAX_FEATURES),
                           ("aux_k", MAX_FEATURES), ("dead_after_steps", None)):
            check_number(name, getattr(self, name), 1, high, integer=True, error=DictionaryError)
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient", "decoder_init_norm"):
            check_number(name, getattr(self, name), 0, error=DictionaryError)
        for name in ("jumprelu_bandwidth", "jumprelu_init_threshold"):
            check_number(name, getattr(self, name), 0, low_open=True, error=DictionaryError)
        check_number("threshold_momentum", self.threshold_momentum, 0, 1, high_open=True, error=DictionaryError)
        if not isinstance(self.unit_norm_decoder, bool):
            raise DictionaryError(f"unit_norm_decoder = {self.unit_norm_decoder!r}: expected true or false")
        object.__setattr__(self, "matryoshka_sizes", self._checked_matryoshka_sizes())
        if self.kind == "sae" and self.n_blocks != 1:
            raise DictionaryError(f"an SAE has one block, got n_blocks = {self.n_blocks}: use kind 'crosscoder'")
        if self.sparsity in K_SPARSITIES and self.k > self.n_features:
            raise DictionaryError(f"k = {self.k} exceeds n_features = {self.n_features}: expected k <= n_features")
        refusal = memory_refusal(f"the weights of a {self.kind} of {self.n_features} features x {self.n_blocks} blocks "
                                 f"x width {self.d}", self.parameter_bytes)
        if refusal:
            raise DictionaryError(f"{refusal}: expected fewer features")

    def _checked_matryoshka_sizes(self) -> tuple[int, ...]:
        """``matryoshka_sizes`` as a tuple (JSON gives a list), or a one-line error: increasing positive integers
        ending at ``n_features``."""
        sizes = self.matryoshka_sizes
        if isinstance(sizes, (list, tuple)) and all(isinstance(m, int) and not isinstance(m, bool) for m in sizes):
            sizes = tuple(sizes)
            increasing = all(a < b for a, b in zip((0, *sizes), sizes))  # also: the first is positive
            if not sizes or (increasing and sizes[-1] == self.n_features):
                return sizes
        raise DictionaryError(f"matryoshka_sizes = {self.matryoshka_sizes!r}: expected increasing positive integers "
                              f"ending at n_features = {self.n_features}, e.g. {list(default_matryoshka_sizes(self.n_features))}")

    @property
    def parameter_bytes(self) -> int:
        """Bytes of the dictionary's float32 weights (an exact integer: no overflow): ``W_enc`` ``[R, d, F]``,
        ``W_dec`` ``[F, B, d]`` and per feature ``b_enc``, the JumpReLU threshold and the ``int64`` firing counter
        (``b_dec``'s ``B·d`` is left out, negligible beside the decoder). Training holds four times as much
        (gradients and Adam's two moments)."""
        return array_bytes((self.n_features, (self.read_blocks + self.n_blocks) * self.d + 4))

    @property
    def matryoshka_prefixes(self) -> tuple[int, ...]:
        """The prefix widths the ``matryoshka`` loss uses: ``matryoshka_sizes``, or ``F/16, F/4, F`` when empty."""
        return self.matryoshka_sizes or default_matryoshka_sizes(self.n_features)

    @property
    def unit_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (``unit_norm_decoder``, always for ``jumprelu``)."""
        return self.unit_norm_decoder or self.sparsity == "jumprelu"

    @property
    def sparsity_coefficient(self) -> float:
        """The coefficient of the sparsity's penalty: ``l1_coefficient`` (``l1``), ``l0_coefficient`` (``jumprelu``),
        0 for the others (sparse by construction)."""
        return {"l1": self.l1_coefficient, "jumprelu": self.l0_coefficient}.get(self.sparsity, 0.0)

    @property
    def read_blocks(self) -> int:
        """``R``: the number of blocks the encoder reads (1, or ``B`` when it reads all of them)."""
        return self.n_blocks if self.encoder_reads == "all" else 1

    def to_dict(self) -> dict:
        """JSON-able values (``matryoshka_sizes`` as a list, as JSON reads it back)."""
        return {**asdict(self), "matryoshka_sizes": list(self.matryoshka_sizes)}

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


def default_matryoshka_sizes(n_features: int) -> tuple[int, ...]:
    """``F/16, F/4, F`` (rounded up, repeats dropped): a few coarse-to-fine levels."""
    return tuple(sorted({max(1, -(-n_features // 16)), max(1, -(-n_features // 4)), n_features}))


def _expect_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DictionaryError(f"{name} = {value!r}: expected one of {', '.join(choices)}")
