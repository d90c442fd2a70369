"""Helpers the tests import (`from tests.support.train import tiny_config`); pytest
fixtures are in tests/conftest.py."""
