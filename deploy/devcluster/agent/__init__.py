"""The node agent: plays kubelet for the dev cluster's nodes.

It registers the nodes, keeps their status and leases fresh, and runs every pod bound to them as
local processes on the pod's own loopback IP (``127.10.x.y``). See ``pods`` for what a pod gets.
"""
