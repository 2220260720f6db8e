"""``python -m flujo_operator`` / ``flujo-operator``: run the operator.

Equivalent to ``kopf run -m flujo_operator.handlers`` with the namespaces
and health endpoint taken from :class:`~flujo_operator.config.Config`.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from flujo_operator.config import Config, ConfigError

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
INSTALL_HINT = "pip install 'flujo[operator]'"


def _parser() -> argparse.ArgumentParser:
    from flujo_operator import config

    table = (config.__doc__ or "").split("\n\n", 1)[-1].replace("``", "")
    return argparse.ArgumentParser(
        prog="flujo-operator",
        description=(
            "Run the Flujo operator: reconcile Agent, Pipeline and PipelineRun resources "
            "with kopf. Configured by environment variables only."
        ),
        epilog=table,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def missing_credentials(env: Mapping[str, str], home: Path) -> str | None:
    """What was looked for, when neither in-cluster nor kubeconfig credentials exist.

    The same places kopf's login (through the ``kubernetes`` client) tries, in
    its order; None when one of them is there.
    """
    if env.get("KUBERNETES_SERVICE_HOST") and SERVICE_ACCOUNT_TOKEN.is_file():
        return None
    configured = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates = [Path(p).expanduser() for p in configured] or [home / ".kube" / "config"]
    if any(p.is_file() for p in candidates):
        return None
    where = "KUBECONFIG=" + os.pathsep.join(configured) if configured else str(candidates[0])
    return (
        "no Kubernetes credentials: looked for the in-cluster service account "
        f"(KUBERNETES_SERVICE_HOST and {SERVICE_ACCOUNT_TOKEN}) and a kubeconfig ({where})"
    )


def _check_audit_target(target: str) -> None:
    """An audit file that cannot be written stops the operator now, in one line."""
    if target in ("off", "stdout", "stderr", "-"):
        return
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"FLUJO_AUDIT_LOG: cannot open {target}: {exc.strerror}") from None
    os.close(fd)


def _fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = Config.from_env()
        _check_audit_target(config.audit_log)
    except ConfigError as exc:
        _fail(str(exc))
    try:
        import kopf

        import flujo_operator.handlers  # noqa: F401  (registers the handlers)
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] in ("kopf", "kubernetes"):
            _fail(
                f"flujo-operator needs the operator extra ({exc.name} is missing): {INSTALL_HINT}"
            )
        raise
    missing = missing_credentials(os.environ, Path.home())
    if missing is not None:
        _fail(missing)

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
