pytest_plugins = ["modelplane.testing.fixtures", "modelplane.testing.registry_fixtures"]
