"""``python -m flujo_operator`` / ``flujo-operator``: run the operator.

Equivalent to ``kopf run -m flujo_operator.handlers`` with the namespaces
and health endpoint taken from :class:`~flujo_operator.config.Config`.
"""

from __future__ import annotations

import os
import socket
import sys
import zlib

from flujo_operator.config import Config, ConfigError


def _check_audit_target(target: str) -> None:
    """An audit file that cannot be written stops the operator now, in one line."""
    if target in ("off", "stdout", "stderr", "-"):
        return
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"FLUJO_AUDIT_LOG: cannot open {target}: {exc.strerror}") from None
    os.close(fd)


def main() -> None:
    try:
        config = Config.from_env()
        _check_audit_target(config.audit_log)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    import kopf

    import flujo_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    ha: dict[str, object] = {"standalone": True}
    if config.peering:
        # Replicas need distinct priorities, or kopf pauses all of them.
        ha = {
            "standalone": False,
            "peering_name": config.peering,
            "priority": zlib.crc32(socket.gethostname().encode()) % 10**6 + 1,
        }
    kopf.run(
        **ha,  # type: ignore[arg-type]
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=(
            f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
        ),
    )


if __name__ == "__main__":
    main()
