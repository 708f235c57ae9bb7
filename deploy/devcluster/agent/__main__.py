"""``python -m modelplane.devcluster.agent``: the node agent process (started by ``dev-cluster up``)."""

from modelplane.devcluster.agent.main import main

main()
