"""``python -m modelplane.serving.registry`` = ``modelplane registry ...``."""

from modelplane.cli.registry import app

app(prog_name="modelplane registry")
