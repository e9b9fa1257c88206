"""Fixtures of the reliability proofs (worker crew), shared by tests/proofs/test_*.py."""

from tests.proofs.reliability import crew, live_crew  # noqa: F401
