"""Autoscaling, shared by the operator and the local stack: pure decisions and load arithmetic.

- :mod:`~modelplane.autoscaling.decide`: how many replicas, from the observed concurrency;
- :mod:`~modelplane.autoscaling.load`: the routers' load per model, averaged over time;
- :mod:`~modelplane.autoscaling.scaler`: one deployment's sample window and state between steps.

No I/O here: the callers gather the inputs and write the result.
"""
