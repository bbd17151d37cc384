"""Dictionary models (SAE, group crosscoder), their sparsities and losses, metrics, planted test features. May
import torch and `groupcc.groups` (saving and loading dictionaries is in :mod:`groupcc.training.dictionary_files`).

The SAE is the one-block case of the group crosscoder: one :class:`Dictionary` class reads activations
``[N, B, d]`` (``B = |G|`` blocks for a crosscoder, block 0 the identity; ``B = 1`` for an SAE).
"""

from .codes import Codes, batch_topk_codes, jumprelu_codes, jumprelu_l0, relu_codes, threshold_codes, topk_codes
from .config import DictionaryConfig
from .dictionary import Dictionary, DictionaryOutput
from .errors import DictionaryError
from .losses import (LOSSES, LossTerms, aux_k_loss, dictionary_loss, jumprelu_loss, l1_loss, matryoshka_loss,
                     prefix_reconstructions, topk_loss)
from .metrics import DictionaryMetrics, MetricsAccumulator, evaluate_batches
from .planted import PlantedFeatures, best_cosines, orthogonal_representation, plant_group_features, recovered_fraction

__all__ = [
    "Dictionary", "DictionaryConfig", "DictionaryOutput", "DictionaryError",
    "Codes", "relu_codes", "topk_codes", "batch_topk_codes", "threshold_codes", "jumprelu_codes", "jumprelu_l0",
    "LossTerms", "LOSSES", "dictionary_loss", "l1_loss", "topk_loss", "jumprelu_loss", "matryoshka_loss",
    "prefix_reconstructions", "aux_k_loss",
    "DictionaryMetrics", "MetricsAccumulator", "evaluate_batches",
    "PlantedFeatures", "plant_group_features", "orthogonal_representation", "best_cosines", "recovered_fraction",
]
