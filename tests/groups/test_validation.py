"""The one number validator: finite numbers in an interval, integers within 64 bits, never booleans, each refusal
one line in the caller's own error class; the run-directory module re-exports it."""

import pytest

from groupcc.errors import GroupccError
from groupcc.groups import GroupError
from groupcc.groups.validation import MAX_INT, check_number
from groupcc.training import runs


def test_values_are_checked_in_one_line():
    assert check_number("seed", MAX_INT, 0, integer=True) == 2**63 - 1
    for value in (-1, 2**64, 1.5, True, "3", float("nan")):
        with pytest.raises(GroupccError, match=r"^seed = .*: expected an integer in \[0, 9223372036854775807\]$"):
            check_number("seed", value, 0, integer=True)
    for value in (float("nan"), float("inf"), 0, 10**400):
        with pytest.raises(GroupccError, match=r"^lr = .*: expected a finite number in \(0, 10\]$"):
            check_number("lr", value, 0, 10, low_open=True)


def test_a_refusal_is_raised_as_the_callers_error_class():
    with pytest.raises(GroupError, match=r"^n = 0: expected an integer in \[1, 5\]$"):
        check_number("n", 0, 1, 5, integer=True, error=GroupError)


def test_the_run_directory_module_re_exports_it():
    assert runs.check_number is check_number and runs.MAX_INT == MAX_INT
