"""A real Kubernetes control plane for development and tests, built from Go modules at pinned versions.

``build`` compiles and caches etcd, the Kubernetes control-plane binaries, kubectl, Helm and kwok;
``cluster`` starts them on loopback with generated certificates and registers GPU test nodes; the
``agent`` package plays kubelet for those nodes, running each pod's command as a local process on
its own loopback pod IP. ``modelplane dev-cluster up|down|status|kubeconfig`` drives it all.
"""
