"""The data path: model registry, V2 serving runtime and router (import name ``modelplane.serving``)."""
