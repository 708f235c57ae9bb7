"""The shared API of Modelplane: what every part may import, and which imports no part.

- :mod:`modelplane.api.v1alpha1`: the ModelDeployment types (the single source of the CRD), with
  :mod:`~modelplane.api.crd` and :mod:`~modelplane.api.reference` generating the CRD YAML and the
  field reference from them;
- :mod:`modelplane.api.labels`: the labels the operator puts on children and the router reads;
- :mod:`modelplane.api.metrics`: the metric names one part exposes and another part reads.

An import contract (``.importlinter``) keeps this package free of any other part of Modelplane.
"""
