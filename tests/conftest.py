pytest_plugins = ["modelplane.testing.fixtures", "modelplane.testing.cluster"]
pytest_plugins = ["modelplane.testing.fixtures", "modelplane.testing.runtime_fixtures"]
