"""Shared pytest configuration."""

from hypothesis import settings

settings.register_profile("groupcc", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("groupcc")
