pytest_plugins = ["modelplane.testing.fixtures", "modelplane.testing.runtime_fixtures"]
