"""``python -m flujo`` is the ``flujo`` command."""

from flujo.cli import main

main()
