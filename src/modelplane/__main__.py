"""``python -m modelplane``: the same as the ``modelplane`` command."""

from modelplane.cli.main import main

main()
