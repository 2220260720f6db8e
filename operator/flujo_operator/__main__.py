"""``python -m flujo_operator`` / ``flujo-operator``: run the operator.

Equivalent to ``kopf run -m flujo_operator.handlers`` with the namespaces
and health endpoint taken from :class:`~flujo_operator.config.Config`.
"""

from __future__ import annotations

import sys

from flujo_operator.config import Config, ConfigError


def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    import kopf

    import flujo_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=(
            f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
        ),
    )


if __name__ == "__main__":
    main()
