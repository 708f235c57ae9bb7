pytest_plugins = [
    "modelplane.testing.fixtures",
    "modelplane.testing.cluster",
    "modelplane.testing.runtime_fixtures",
    "modelplane.testing.registry_fixtures",
    "modelplane.testing.operator_fixtures",
]
