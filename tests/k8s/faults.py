"""Fault injection for the API emulator: a flaky API server under load.

Off by default.  ``Emulator.faults = Faults(...)`` (or ``k8s_emulator.emulator.faults``)
turns it on for the requests made after it is set:

- ``write_error_rate``: that share of write requests (POST/PUT/PATCH/DELETE) is
  answered with an error *instead of* being carried out — ``500 InternalError``,
  ``429 TooManyRequests`` with a ``Retry-After`` header, or, for updates and patches,
  ``409 Conflict`` ("the object has been modified").  A create is never answered 409:
  a real server says ``AlreadyExists`` only when the object exists, and a client may
  rightly take that as success.
- ``watch_drop_seconds``: every watch stream is closed after about that long (±50 %).
  The client resumes from the last ``resourceVersion`` it saw, and with
  ``stale_resume`` that resume is answered ``410 Gone`` once ("too old resource
  version", as after an etcd compaction), so the client must list again.

Requests whose User-Agent starts with one of ``spare`` (the local kubelet and kubectl,
which set up the test) are never faulted.  ``injected`` counts what was injected.
Choices come from a seeded ``random.Random``: a run is reproducible for a given order
of requests.
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Faults"]


@dataclass
class Faults:
    write_error_rate: float = 0.0
    codes: tuple[int, ...] = (500, 409, 429)
    retry_after_seconds: int = 1
    watch_drop_seconds: float = 0.0
    stale_resume: bool = True
    spare: tuple[str, ...] = ("flujo-local-kubelet", "kubectl")
    seed: int = 0
    injected: collections.Counter[str] = field(default_factory=collections.Counter)
    _rng: random.Random = field(init=False, repr=False)
    _stale: set[str] = field(init=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def spared(self, user_agent: str) -> bool:
        return any(user_agent.startswith(s) for s in self.spare)

    def write_fault(self, method: str, user_agent: str) -> tuple[int, dict[str, Any]] | None:
        """The error to answer this write with, or None to carry it out."""
        if method not in ("POST", "PUT", "PATCH", "DELETE") or self.spared(user_agent):
            return None
        if self.write_error_rate <= 0 or self._rng.random() >= self.write_error_rate:
            return None
        codes = [c for c in self.codes if c != 409 or method in ("PUT", "PATCH")]
        code = self._rng.choice(codes)
        self.injected[str(code)] += 1
        reason, message = {
            500: ("InternalError", "injected fault: etcdserver: request timed out"),
            409: (
                "Conflict",
                "injected fault: the object has been modified; "
                "please apply your changes to the latest version and try again",
            ),
            429: ("TooManyRequests", "injected fault: too many requests, please try again later"),
        }.get(code, ("InternalError", "injected fault"))
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if code == 429:
            status["details"] = {"retryAfterSeconds": self.retry_after_seconds}
        return code, status

    def headers(self, code: int) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)} if code == 429 else {}

    def watch_lifetime(self, user_agent: str) -> float | None:
        """Seconds until this watch stream is dropped (None: never)."""
        if self.watch_drop_seconds <= 0 or self.spared(user_agent):
            return None
        return self.watch_drop_seconds * self._rng.uniform(0.5, 1.5)

    def note_drop(self, resource_version: str) -> None:
        """A stream was dropped; the last resourceVersion it delivered goes stale."""
        self.injected["watch-drop"] += 1
        if self.stale_resume and resource_version not in ("", "0"):
            self._stale.add(resource_version)

    def resume_gone(self, user_agent: str, resource_version: str) -> bool:
        """Whether a watch resumed from ``resource_version`` is answered 410 Gone:
        once, for a resume from where a dropped stream left off."""
        if self.spared(user_agent) or resource_version not in self._stale:
            return False
        self._stale.discard(resource_version)
        self.injected["410"] += 1
        return True
