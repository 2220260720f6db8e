"""Shared fixtures. Protocol servers live in tests/servers."""

pytest_plugins = ["tests.servers.fixtures", "tests.golden_plugin", "tests.k8s.fixtures"]
