pytest_plugins = ["modelplane.testing.fixtures", "modelplane.testing.cluster"]
