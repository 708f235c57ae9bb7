pytest_plugins = ["modelplane.testing.fixtures"]
