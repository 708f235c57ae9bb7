"""Resolving a ModelDeployment's model reference into what to serve, for the operator and the local stack.

- :mod:`~modelplane.resolution.resolver`: the interface and its result (:class:`ServedVersion`);
- :mod:`~modelplane.resolution.modelconfig`: the runtime's model configuration, written from a
  tensor signature (pure);
- :mod:`~modelplane.resolution.registry`: the implementation against the registry's REST API.
"""
