"""Local servers speaking real protocols, for tests and benchmarks (no patched clients)."""

from tests.servers.openai_server import (
    CHAT_PATH,
    HOOK_PATH,
    OpenAIServer,
    RecordedRequest,
    Reply,
    completion,
    drop,
    error,
    malformed,
    max_in_window,
    tool_call,
)

__all__ = [
    "CHAT_PATH",
    "HOOK_PATH",
    "OpenAIServer",
    "RecordedRequest",
    "Reply",
    "completion",
    "drop",
    "error",
    "malformed",
    "max_in_window",
    "tool_call",
]
