"""Analysis of a trained dictionary: transform blocks, stabilisers, spectra, families, irrep matching, comparisons.

:func:`analyze_features` characterises every feature of one dictionary on an activation store:

- its activations on the identity block of every row (features that never fire are *dead* and left out of the
  families);
- its transform blocks: the decoder blocks for a crosscoder, the virtual blocks of equivariant matching for an
  SAE (:mod:`groupcc.eval.equivariant_matching`);
- from the blocks, its stabiliser, irrep spectrum and family (:mod:`groupcc.eval.transform_blocks`, :mod:`groupcc.eval.families`);
- for an SAE also its decoder-similarity family;
- for composer activations (all ``|G|²`` pairs in pair order), its irrep (:mod:`groupcc.eval.irrep_matching`).

:func:`compare_dictionaries` scores each clustering against the irrep labels and the SAE's against the crosscoder's
(each SAE feature stands in for the crosscoder feature whose activations are most like its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from groupcc.crosscoders import Dictionary
from groupcc.errors import GroupccError
from groupcc.groups import Group
from groupcc.groups.limits import array_bytes, memory_refusal
from groupcc.training.activation_store import ActivationSource
from groupcc.training.progress import progress_bar
from groupcc.training.runs import check_number

from .comparisons import best_partners, compare_labels
from .families import Clustering, cluster, signatures
from .irrep_matching import DEAD, MIXED, IrrepMatch, match_irreps
from .equivariant_matching import EquivariantMatch, decoder_distances, equivariant_match, virtual_blocks
from .transform_blocks import block_norms, block_similarity, spectra, stabilisers


@dataclass(frozen=True)
class AnalysisSettings:
    """How the features are analysed.

    Attributes:
        stabiliser_tolerance: stabiliser tolerance, a bound on the relative deviation ‖B[g·h] − B[g]‖/‖B‖, in [0, 2).
        n_families: number of families (None: chosen by silhouette score up to max_families); at most the number
            of firing features.
        max_families: largest number of families tried.
        min_explained: irrep matching: a feature whose best irrep explains less than this fraction is 'mixed'.
        matching_rows: at most this many inputs (a fixed random subset) are used for the SAE's equivariant matching.
        batch_rows: inputs encoded at a time.
        seed: seed of the matching subset.

    Every field is checked when the settings are made (finite numbers in range, integers that fit 64 bits); the
    number of families is checked against the features when they are known (:func:`analyze_features`).
    """

    stabiliser_tolerance: float = 0.1
    n_families: int | None = None
    max_families: int = 12
    min_explained: float = 0.0
    matching_rows: int = 2048
    batch_rows: int = 1024
    seed: int = 0

    def __post_init__(self):
        check_number("stabiliser_tolerance", self.stabiliser_tolerance, 0, 2, high_open=True)
        check_number("min_explained", self.min_explained, 0, 1)
        for name in ("max_families", "matching_rows", "batch_rows") + (("n_families",) if self.n_families is not None else ()):
            check_number(name, getattr(self, name), 1, integer=True)
        check_number("seed", self.seed, 0, integer=True)

    def check_families(self, n_features: int, n_firing: int | None = None) -> None:
        """Refuse a fixed number of families above the features (or the firing features, once known)."""
        if self.n_families is None:
            return
        if self.n_families > n_features:
            raise GroupccError(f"n_families = {self.n_families}: expected at most the dictionary's {n_features} features")
        if n_firing is not None and self.n_families > n_firing:
            raise GroupccError(f"n_families = {self.n_families}: only {n_firing} of the {n_features} features fire, "
                               f"expected at most {n_firing}")


def analysis_bytes(group: Group, n_rows: int, n_features: int, d: int, kind: str, settings: AnalysisSettings) -> int:
    """Estimated memory of :func:`analyze_features` (its largest arrays, summed): codes ``[N, F]`` float32,
    transform blocks ``[F, |G|, d]`` (three float64 copies), block similarities ``[F, |G|, |G|]`` (two float64),
    pairwise signature differences ``[F, F, irreps + 2]`` float64 for the clustering; for an SAE also the codes of
    every block on the matching rows ``[|G|, M, F]`` float32 and the ``[F, F]`` float64 similarity matrices of the
    matching, the decoder distances and the partners."""
    n_signature = len(group.irreps()) + 2
    total = (array_bytes((n_rows, n_features)) + array_bytes((3, n_features, group.order, d), 8)
             + array_bytes((2, n_features, group.order, group.order), 8) + array_bytes((n_features, n_features, n_signature), 8))
    if kind == "sae":
        matching = min(settings.matching_rows, n_rows)
        total += array_bytes((group.order, matching, n_features)) + array_bytes((4, n_features, n_features), 8)
    return total


@dataclass
class FeatureLabels:
    """Reference labels of the features: ``kind`` is ``"irrep"`` (composers: :mod:`groupcc.eval.irrep_matching`) or the
    name of the inputs' label (vision: the class of inputs on which the feature is most active); ``order`` lists
    the possible labels for tables and plots; ``score`` is how well the label fits each feature."""

    kind: str
    labels: list[str]
    score: np.ndarray
    order: list[str]

    def counts(self) -> dict[str, int]:
        return {name: self.labels.count(name) for name in self.order if self.labels.count(name)}


def label_by_inputs(codes_NF: np.ndarray, input_labels: np.ndarray, names: list[str], kind: str = "shape", top: int = 20) -> FeatureLabels:
    """Each feature's label is the most common class among its ``top`` most activating inputs (those where it
    fires); its score is the fraction of them in that class. Features that never fire are ``dead``."""
    input_labels = np.asarray(input_labels)
    if input_labels.shape != (codes_NF.shape[0],):
        raise GroupccError(f"got {input_labels.shape[0] if input_labels.ndim else 0} input labels for {codes_NF.shape[0]} inputs: expected one per input")
    labels, score = [], np.zeros(codes_NF.shape[1])
    for i in range(codes_NF.shape[1]):
        order = np.argsort(-codes_NF[:, i])[:top]
        firing = order[codes_NF[order, i] > 0]
        if not firing.size:
            labels.append(DEAD)
            continue
        counts = np.bincount(input_labels[firing], minlength=len(names))
        labels.append(names[int(counts.argmax())])
        score[i] = counts.max() / firing.size
    return FeatureLabels(kind, labels, score, [*names, DEAD])


@dataclass
class DictionaryAnalysis:
    """Everything known about one dictionary's features; arrays are over all ``F`` features, families only
    cover the firing ones (``family[i] = -1`` for dead features)."""

    kind: str
    group: Group
    codes_NF: np.ndarray
    blocks_FBD: np.ndarray
    frequency: np.ndarray
    stabilisers: list[np.ndarray]
    spectrum: np.ndarray
    signatures: np.ndarray
    families: Clustering
    family: np.ndarray
    irreps: IrrepMatch | None = None
    truth: FeatureLabels | None = None
    equivariance: EquivariantMatch | None = None
    decoder_families: Clustering | None = None
    decoder_family: np.ndarray | None = None

    @property
    def alive(self) -> np.ndarray:
        return self.frequency > 0

    def block_norms(self) -> np.ndarray:
        """``[F, |G|]``: ``‖B_i[g]‖``."""
        return block_norms(self.blocks_FBD)

    def block_similarity(self, feature: int) -> np.ndarray:
        """``[|G|, |G|]`` block similarity of one feature."""
        return block_similarity(self.blocks_FBD[feature : feature + 1])[0]

    def representatives(self) -> list[int]:
        """Per family, the member closest to the family's mean signature (the family's typical feature)."""
        out = []
        for family in range(self.families.n_families):
            members = np.flatnonzero(self.family == family)
            sig = self.signatures[members]
            out.append(int(members[np.linalg.norm(sig - sig.mean(axis=0), axis=1).argmin()]))
        return out


@torch.no_grad()
def feature_codes(dictionary: Dictionary, source: ActivationSource, rows: np.ndarray | None = None, every_block: bool = False,
                  batch_rows: int = 1024, progress: bool = False) -> np.ndarray:
    """Activations of the features on ``rows`` (all by default), each row read once. A crosscoder encodes the
    whole row (it reads the blocks it was trained to read): ``[N, F]``. An SAE encodes the identity block,
    ``[N, F]``, or with ``every_block`` each block as its own input, ``[B, N, F]``."""
    rows = np.arange(source.n_rows) if rows is None else np.asarray(rows)
    if every_block and dictionary.config.kind != "sae":
        raise GroupccError("codes of every block are for an SAE; a crosscoder encodes whole rows")
    device = dictionary.b_dec.device
    was_training = dictionary.training
    dictionary.eval()
    out = []
    for start in progress_bar(range(0, len(rows), batch_rows), enabled=progress, desc="feature activations", leave=False):
        chunk = torch.as_tensor(source.read_rows(rows[start : start + batch_rows]))
        if dictionary.config.kind == "sae":
            chunk = chunk.reshape(-1, 1, chunk.shape[-1]) if every_block else chunk[:, :1]
        codes = dictionary.encode(chunk.to(device)).to_dense().cpu().numpy()
        out.append(codes.reshape(-1, source.n_blocks, codes.shape[-1]) if every_block else codes)
    dictionary.train(was_training)
    if not out:
        return np.zeros((0, dictionary.config.n_features), dtype=np.float32)
    codes = np.concatenate(out)
    return np.swapaxes(codes, 0, 1) if every_block else codes


def analyze_features(
    dictionary: Dictionary,
    source: ActivationSource,
    group: Group,
    *,
    answers: np.ndarray | None = None,
    input_labels: tuple[np.ndarray, list[str]] | None = None,
    settings: AnalysisSettings = AnalysisSettings(),
    progress: bool = True,
) -> DictionaryAnalysis:
    """Analyse one dictionary (see the module docstring). ``answers`` (``w(a, b)`` per pair) turns on irrep
    matching; the rows of ``source`` must then be the ``|G|²`` pairs in order. ``input_labels`` (a class per row
    and the class names) labels each feature with the class it is most active on."""
    config = dictionary.config
    if source.n_blocks != group.order:
        raise GroupccError(f"the activations have {source.n_blocks} blocks but {group.name} has {group.order} elements: "
                           "expected activations harvested under this group")
    if source.d != config.d:
        raise GroupccError(f"the dictionary reads width {config.d} but the activations have width {source.d}")
    if config.kind == "crosscoder" and config.n_blocks != group.order:
        raise GroupccError(f"the crosscoder has {config.n_blocks} blocks but {group.name} has {group.order} elements")
    check_analysis_fits(dictionary, source, group, settings)
    codes = feature_codes(dictionary, source, batch_rows=settings.batch_rows, progress=progress)
    if not np.isfinite(codes).all():
        raise GroupccError("the feature activations contain NaN or inf: the activations or the dictionary are not finite")
    frequency = (codes > 0).mean(axis=0)
    settings.check_families(config.n_features, int((frequency > 0).sum()))
    decoder = dictionary.W_dec.detach().cpu().double().numpy()  # [F, B, d]
    equivariance = None
    if config.kind == "crosscoder":
        blocks = decoder
    else:
        equivariance = _equivariant_match(dictionary, source, group, settings, progress)
        blocks = virtual_blocks(equivariance, decoder[:, 0])
    alive = frequency > 0
    subgroup_list = stabilisers(group, blocks, settings.stabiliser_tolerance)
    sig = signatures(group, blocks, np.array([len(s) for s in subgroup_list]))
    families, family = _families(sig, alive, settings)
    analysis = DictionaryAnalysis(
        kind=config.kind, group=group, codes_NF=codes, blocks_FBD=blocks, frequency=frequency,
        stabilisers=subgroup_list, spectrum=spectra(group, blocks), families=families, family=family,
        signatures=sig, equivariance=equivariance,
    )
    if config.kind == "sae":
        distances = decoder_distances(decoder[:, 0])[np.ix_(alive, alive)]
        analysis.decoder_families, analysis.decoder_family = _families(distances, alive, settings, metric="precomputed")
    if answers is not None:
        if codes.shape[0] != group.order**2:
            raise GroupccError(f"irrep matching needs the activations of all {group.order**2} pairs of {group.name}, "
                               f"got {codes.shape[0]} rows")
        analysis.irreps = match_irreps(group, codes, answers, settings.min_explained)
        order = [irrep.name for irrep in group.irreps()] + [MIXED, DEAD]
        analysis.truth = FeatureLabels("irrep", analysis.irreps.labels, analysis.irreps.explained, order)
    elif input_labels is not None:
        analysis.truth = label_by_inputs(codes, *input_labels)
    return analysis


def check_analysis_fits(dictionary: Dictionary, source: ActivationSource, group: Group, settings: AnalysisSettings) -> None:
    """Before any work: the number of families against the features, and the memory the analysis needs
    (:func:`analysis_bytes`) against the machine's."""
    config = dictionary.config
    settings.check_families(config.n_features)
    estimate = analysis_bytes(group, source.n_rows, config.n_features, config.d, config.kind, settings)
    refusal = memory_refusal(f"analysing {config.n_features} {config.kind} features of {group.name} on {source.n_rows} inputs", estimate)
    if refusal:
        raise GroupccError(f"{refusal}: expected fewer features or inputs")


def _families(points: np.ndarray, alive: np.ndarray, settings: AnalysisSettings, metric: str = "euclidean") -> tuple[Clustering, np.ndarray]:
    """Cluster the firing features; family ``-1`` for dead ones. ``points`` is over all features, or over the
    firing ones only for a precomputed distance matrix."""
    chosen = points if metric == "precomputed" else points[alive]
    clustering = cluster(chosen, settings.n_families, max_families=settings.max_families, metric=metric)
    family = np.full(alive.shape[0], -1)
    family[alive] = clustering.labels
    return clustering, family


def _equivariant_match(dictionary: Dictionary, source: ActivationSource, group: Group, settings: AnalysisSettings, progress: bool) -> EquivariantMatch:
    """Codes of every block on a fixed random subset of rows, matched against the identity block's."""
    rng = np.random.default_rng(settings.seed)
    n_rows = min(settings.matching_rows, source.n_rows)
    rows = np.sort(rng.choice(source.n_rows, size=n_rows, replace=False))
    block_codes = feature_codes(dictionary, source, rows, every_block=True, batch_rows=max(1, settings.batch_rows // group.order),
                                progress=progress)
    return equivariant_match(block_codes[0], block_codes)


def compare_dictionaries(crosscoder: DictionaryAnalysis | None, sae: DictionaryAnalysis | None) -> dict:
    """ARI, NMI and purity of every clustering against the reference labels (irreps or input classes; firing
    features), and of the SAE's equivariant families against the families of each SAE feature's crosscoder partner."""
    out: dict = {}
    for name, analysis, family in [
        ("crosscoder", crosscoder, None if crosscoder is None else crosscoder.family),
        ("sae_equivariant", sae, None if sae is None else sae.family),
        ("sae_decoder", sae, None if sae is None else sae.decoder_family),
    ]:
        if analysis is None or analysis.truth is None or family is None:
            continue
        alive = analysis.alive
        labels = [label for label, keep in zip(analysis.truth.labels, alive) if keep]
        out[f"{name}_vs_{analysis.truth.kind}s"] = compare_labels(family[alive], labels)
    if crosscoder is not None and sae is not None:
        partners, similarity = best_partners(sae.codes_NF, crosscoder.codes_NF)
        alive = sae.alive & crosscoder.alive[partners]
        out["sae_vs_crosscoder"] = {
            **compare_labels(sae.family[alive], crosscoder.family[partners[alive]]),
            "mean_partner_cosine": float(similarity[alive].mean()) if alive.any() else None,
        }
    for name, analysis in (("crosscoder", crosscoder), ("sae", sae)):
        if analysis is not None and analysis.truth is not None:
            out.setdefault(f"features_per_{analysis.truth.kind}", {})[name] = analysis.truth.counts()
    return out


def family_table(analysis: DictionaryAnalysis, family: np.ndarray | None = None) -> list[dict]:
    """One row per family: size, irrep labels and stabiliser orders of its members (counts), mean irrep
    spectrum, mean firing frequency and representative feature."""
    family = analysis.family if family is None else family
    names = [irrep.name for irrep in analysis.group.irreps()]
    representatives = analysis.representatives() if family is analysis.family else [None] * (family.max() + 1)
    rows = []
    for index in range(family.max() + 1):
        members = np.flatnonzero(family == index)
        row = {
            "family": index,
            "size": int(members.size),
            "stabiliser_orders": _counts(len(analysis.stabilisers[i]) for i in members),
            "mean_spectrum": dict(zip(names, np.round(analysis.spectrum[members].mean(axis=0), 4).tolist())),
            "mean_frequency": float(analysis.frequency[members].mean()),
            "representative": representatives[index],
        }
        if analysis.truth is not None:
            row[f"{analysis.truth.kind}s"] = _counts(analysis.truth.labels[i] for i in members)
        rows.append(row)
    return rows


def _counts(values) -> dict:
    counts: dict = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def feature_rows(analysis: DictionaryAnalysis) -> list[dict]:
    """One JSON-able row per feature."""
    rows = []
    for i in range(len(analysis.frequency)):
        row = {
            "feature": i,
            "frequency": float(analysis.frequency[i]),
            "family": int(analysis.family[i]),
            "stabiliser": analysis.stabilisers[i].tolist(),
            "stabiliser_order": len(analysis.stabilisers[i]),
            "spectrum": np.round(analysis.spectrum[i], 4).tolist(),
        }
        if analysis.truth is not None:
            row.update({analysis.truth.kind: analysis.truth.labels[i], "label_score": round(float(analysis.truth.score[i]), 4)})
        if analysis.equivariance is not None:
            row["equivariance"] = round(float(analysis.equivariance.equivariance()[i]), 4)
        if analysis.decoder_family is not None:
            row["decoder_family"] = int(analysis.decoder_family[i])
        rows.append(row)
    return rows


def analysis_summary(analysis: DictionaryAnalysis) -> dict:
    """The JSON record of one dictionary's analysis (see :func:`family_table`, :func:`feature_rows`)."""
    summary = {
        "kind": analysis.kind,
        "n_features": int(len(analysis.frequency)),
        "n_firing": int(analysis.alive.sum()),
        "families": {
            "n_families": analysis.families.n_families,
            "chosen_automatically": analysis.families.chosen_automatically,
            "silhouette": {str(k): round(v, 4) for k, v in analysis.families.silhouette.items()},
            "table": family_table(analysis),
        },
        "features": feature_rows(analysis),
    }
    if analysis.equivariance is not None:
        summary["mean_equivariance"] = float(analysis.equivariance.equivariance()[analysis.alive].mean()) if analysis.alive.any() else None
    if analysis.decoder_families is not None:
        summary["decoder_families"] = {
            "n_families": analysis.decoder_families.n_families,
            "chosen_automatically": analysis.decoder_families.chosen_automatically,
            "table": family_table(analysis, analysis.decoder_family),
        }
    if analysis.truth is not None:
        summary[f"features_per_{analysis.truth.kind}"] = analysis.truth.counts()
    return summary
