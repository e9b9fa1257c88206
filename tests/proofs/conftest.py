"""Fixtures of the reliability proofs (worker crew), shared by tests/proofs/test_*.py."""

from tests.proofs.reliability import crew, drained, live_crew  # noqa: F401
