"""The operator's autoscaling loop: the routers' load scraped, a decision per deployment, the scale written.

The decision and the load arithmetic are shared with the local stack in :mod:`modelplane.autoscaling`.
"""
