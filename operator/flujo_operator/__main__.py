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

    args = ["run", "-m", "flujo_operator.handlers", "--standalone"]
    if config.namespaces:
        for namespace in config.namespaces:
            args += ["--namespace", namespace]
    else:
        args.append("--all-namespaces")
    if config.health_port:
        args.append(f"--liveness=http://0.0.0.0:{config.health_port}/healthz")
    if config.log_format == "json":
        args.append("--log-format=json")
    sys.argv = ["kopf", *args]
    kopf.cli.main()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
