"""Fakes of external services, served for real on loopback, for tests."""
