"""Finite groups, their real irreducible representations, the group Fourier transform and group actions.

The lowest layer of groupcc: numpy only. Elements are integers ``0..|G|-1`` with the identity ``0``;
``G.mult_table[a, b]`` is the index of ``a·b``; for permutations ``a·b`` applies ``b`` first.
"""

from .actions import PAIR_ACTIONS, conjugation, left_multiplication, pair_action, regular_representation, right_multiplication
from .constructors import (
    alternating,
    cyclic,
    dihedral,
    direct_product,
    from_cayley_table,
    from_permutations,
    get_group,
    quaternion,
    read_cayley_table,
    symmetric,
)
from .errors import GroupError
from .fourier import fourier_transform, inverse_fourier_transform, irrep_energies, irrep_spectrum
from .group import Group
from .irreps import Irrep, decompose, entry_basis, generic_irreps
from .limits import MAX_ORDER, array_bytes, bytes_text, memory_refusal
from .subgroups import largest_subgroup_within
from .words import Word, parse_word

__all__ = [
    "Group", "GroupError", "Irrep",
    "cyclic", "dihedral", "symmetric", "alternating", "quaternion", "direct_product",
    "from_cayley_table", "from_permutations", "get_group", "read_cayley_table",
    "generic_irreps", "decompose", "entry_basis", "Word", "parse_word",
    "fourier_transform", "inverse_fourier_transform", "irrep_energies", "irrep_spectrum",
    "left_multiplication", "right_multiplication", "conjugation", "regular_representation",
    "pair_action", "PAIR_ACTIONS",
    "MAX_ORDER", "array_bytes", "bytes_text", "memory_refusal", "largest_subgroup_within",
]
