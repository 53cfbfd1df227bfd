"""Helpers for tests/test_docker.py: test data generators, the fake hub's image, a compose override."""
