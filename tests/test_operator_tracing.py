"""One run, one trace: the operator's run span and every step pod's span share the
trace id in the PipelineRun status, exported over OTLP/HTTP to a local receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.operatorkit import ROOT, get_json, running_operator, wait_for


class Receiver:
    """A minimal OTLP/HTTP trace receiver: decodes the protobuf requests it gets."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @contextmanager
    def serving(self) -> Iterator[str]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            with receiver.lock:
                                receiver.spans.append(
                                    {
                                        "service": service,
                                        "name": span.name,
                                        "trace": span.trace_id.hex(),
                                        "id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                    }
                                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


def test_a_run_is_one_trace_across_the_operator_and_its_step_pods(
    kubeconfig: Path, kubectl: Any, local_kubelet: Any, tmp_path: Path
) -> None:
    kubectl("apply", "-f", str(ROOT / "crds"))
    receiver = Receiver()
    with (
        receiver.serving() as endpoint,
        running_operator(
            kubeconfig,
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        ),
    ):
        kubectl(
            "apply",
            "-f",
            str(ROOT / "examples" / "linear.yaml"),
            "-f",
            str(ROOT / "examples" / "runs" / "linear.yaml"),
        )
        kubectl(
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pipelinerun/linear-1",
            "--timeout=60s",
        )
        status = get_json(kubectl, "pipelinerun", "linear-1")["status"]
        _, trace_id, run_span_id, _ = status["traceparent"].split("-")

        def spans() -> list[dict[str, Any]] | None:
            with receiver.lock:
                found = [s for s in receiver.spans if s["trace"] == trace_id]
            services = [s["service"] for s in found]
            return (
                found
                if services.count("flujo-step") == 3 and "flujo-operator" in services
                else None
            )

        found = wait_for(spans, 30, f"spans of trace {trace_id}: {receiver.spans}")
        run = [s for s in found if s["service"] == "flujo-operator"]
        steps = [s for s in found if s["service"] == "flujo-step"]
        assert [s["id"] for s in run] == [run_span_id]
        assert all(s["parent"] == run_span_id for s in steps)
        assert len({s["id"] for s in steps}) == 3
