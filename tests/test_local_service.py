"""devtools.local_service: a service the tests start is stopped, and reaped,
by SIGTERM; nothing left behind, no SIGKILL."""

import signal
import socket
import sys

from devtools.local_service import LocalService, reachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recording(LocalService):
    """Keeps what ``start`` returned, for the test to look at."""

    def start(self, host, timeout=90.0):
        process = super().start(host, timeout)
        STARTED.append(process)
        return process


STARTED = []


def test_a_service_started_here_is_stopped_by_sigterm_and_reaped():
    host = f"127.0.0.1:{_free_port()}"
    service = Recording(
        "http-test",
        "a test HTTP server",
        "HTTP_TEST_HOST",
        host,
        lambda h: [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", h.rsplit(":", 1)[1]],
    )
    STARTED.clear()
    with service.running(host):
        assert reachable(host)
    (process,) = STARTED
    # Reaped (a return code), and by SIGTERM: the stop did not wait out its grace to SIGKILL a zombie.
    assert process.returncode == -signal.SIGTERM
    assert not reachable(host)


def test_a_service_already_answering_is_left_alone():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        host = f"127.0.0.1:{listener.getsockname()[1]}"
        service = LocalService("none", "nothing", "NONE_HOST", host, lambda h: ["false"])
        with service.running(host):
            pass
        assert reachable(host)  # not stopped: this test's own listener still answers
