"""``python -m flujo_operator`` / ``flujo-operator``: start the operator."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point; the reconcilers arrive with the operator issue."""
    sys.stderr.write("error: the Flujo operator is not part of this release yet\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
