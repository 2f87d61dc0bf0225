"""vLLM binds two ports sdg picks: its HTTP port (teacher.port=0) and VLLM_PORT (torch.distributed's store).
Both are picked free and released before vLLM binds them, so another process can take either first; the
start then relaunches at once on newly picked ports (a bounded number of times).

The server here is a stand-in for vLLM (STANDIN_VLLM, a tiny script, no vLLM): it binds its HTTP port the
way vLLM does (SO_REUSEADDR, so the failure is Python's own `OSError: [Errno 98] Address already in use`,
the line vLLM prints), then VLLM_PORT the way torch's store does, printing torch's DistNetworkError line
when that port is taken; then it answers /health and a chat completion. The ports are really taken (a
listening socket of the test's), never faked.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from sdg.teacher import backends, server_base
from sdg.teacher.backends import DIST_PORT_SPAN, VllmServer, dist_port_clash
from sdg.teacher.server_base import PORT_IN_USE, PORT_RETRIES, TeacherStartError, fatal_reason, free_port

# What vLLM's log shows when a port is taken (vllm/entrypoints/launchers/launcher.py create_server_socket:
# sock.bind -> OSError; torch c10d TCPStore: "The server socket has failed to listen on any local network
# address. port: {}, useIpv6: {}, code: {}, name: {}, message: {}").
HTTP_CLASH = "OSError: [Errno 98] Address already in use"
DIST_CLASH = ("torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
              "address. port: {port}, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use")

STANDIN_VLLM = '''"""Stand-in for vLLM's OpenAI server (tests/test_vllm_port.py): binds --port as vLLM does (SO_REUSEADDR),
then VLLM_PORT as torch.distributed's store does, then serves /health and /v1/chat/completions."""
import json, os, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

DIST_CLASH = {dist_clash!r}
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
host, port, dist = args["--host"], int(args["--port"]), int(os.environ["VLLM_PORT"])
with open(os.environ["STANDIN_LAUNCHES"], "a") as f:
    f.write(f"{{port}} {{dist}}\\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _json(self, data):
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._json({{}})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._json({{"choices": [{{"index": 0, "message": {{"role": "assistant", "content": "OK"}},
                                   "finish_reason": "length"}}]}})


server = HTTPServer((host, port), Handler)  # taken: Python's own "OSError: [Errno 98] Address already in use"
store = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    store.bind(("", dist))
except OSError:
    print(DIST_CLASH.format(port=dist), flush=True)
    sys.exit(1)
store.listen()
print("stand-in ready", flush=True)
server.serve_forever()
'''


def _standin(tmp_path: Path) -> Path:
    script = tmp_path / "standin_vllm.py"
    script.write_text(STANDIN_VLLM.format(dist_clash=DIST_CLASH), encoding="utf-8")
    return script


def _server(tmp_path: Path, **kw) -> VllmServer:
    launches = tmp_path / "launches.txt"
    return VllmServer(model_path="stand-in", model_name="teacher", command=[sys.executable, str(_standin(tmp_path))],
                      log_path=tmp_path / "vllm.log", startup_timeout_s=60,
                      env={"PATH": "/usr/bin:/bin", "STANDIN_LAUNCHES": str(launches)}, **kw)


def _launches(tmp_path: Path) -> list[tuple[int, int]]:
    path = tmp_path / "launches.txt"
    if not path.exists():
        return []
    return [tuple(int(v) for v in line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def occupied():
    """Listening sockets the test holds (ports really taken); all closed at the end."""
    held: list[socket.socket] = []

    def take(port: int = 0) -> int:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", port))
        s.listen()
        held.append(s)
        return int(s.getsockname()[1])

    yield take
    for s in held:
        s.close()


def _first_pick(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The next HTTP port picked is `port` (as if another process took it after we picked it)."""
    real = server_base.free_port
    first = [port]

    def pick(host: str = "127.0.0.1", **kw) -> int:
        return first.pop() if first and not kw else real(host, **kw)

    monkeypatch.setattr(server_base, "free_port", pick)


def test_the_clash_lines_are_what_vllm_prints() -> None:
    assert fatal_reason(HTTP_CLASH + "\n") == PORT_IN_USE
    dist = DIST_CLASH.format(port=41234)
    assert fatal_reason(dist + "\n") == PORT_IN_USE
    assert dist_port_clash(dist) and not dist_port_clash(HTTP_CLASH)
    # vLLM's V1 engine core prefixes its lines; older torch words the store's failure differently
    assert dist_port_clash("(EngineCore_DP0 pid=812) " + dist)
    assert dist_port_clash("RuntimeError: The server socket has failed to listen on any local network address. The "
                           "server socket has failed to bind to 0.0.0.0:29500 (errno: 98 - Address already in use).")
    # vLLM's own upward scan from VLLM_PORT is advice, not a failure
    assert fatal_reason("INFO 05-01 10:00:00 [network_utils.py:248] Port 41234 is already in use, trying port "
                        "41235\n") is None


def test_http_port_taken_before_vllm_binds_it_relaunches_on_new_ports(tmp_path: Path, occupied,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    taken = occupied()
    _first_pick(monkeypatch, taken)
    server = _server(tmp_path)
    try:
        ep = server.start()
        (http1, dist1), (http2, dist2) = _launches(tmp_path)
        assert http1 == taken and http2 != taken and dist2 != dist1  # both ports picked anew
        assert ep.base_url == f"http://127.0.0.1:{http2}/v1"
        assert HTTP_CLASH in (tmp_path / "vllm.log").read_text()
    finally:
        server.stop()


def test_vllm_port_taken_before_the_store_binds_it_relaunches_on_new_ports(tmp_path: Path, occupied) -> None:
    taken = occupied()
    server = _server(tmp_path, dist_port=taken)  # what serving() picked; someone took it since
    try:
        server.start()
        (http1, dist1), (http2, dist2) = _launches(tmp_path)
        assert dist1 == taken and dist2 != taken and http2 != http1
        assert server.extra_env()["VLLM_PORT"] == str(dist2)
        assert "EADDRINUSE" in (tmp_path / "vllm.log").read_text()
    finally:
        server.stop()


def test_a_fixed_http_port_keeps_its_number_while_vllm_port_moves(tmp_path: Path, occupied) -> None:
    fixed = free_port()
    taken = occupied()
    server = _server(tmp_path, port=fixed, dist_port=taken)
    try:
        server.start()
        assert [h for h, _ in _launches(tmp_path)] == [fixed, fixed]
        assert _launches(tmp_path)[1][1] != taken
    finally:
        server.stop()


def test_a_fixed_http_port_that_is_taken_fails_at_once(tmp_path: Path, occupied) -> None:
    """teacher.port=N is the user's: a clash on it is the error, not a reason to try other ports."""
    taken = occupied()
    server = _server(tmp_path, port=taken)
    with pytest.raises(TeacherStartError) as err:
        server.start()
    assert err.value.reason == PORT_IN_USE and len(_launches(tmp_path)) == 1


def test_retries_are_bounded(tmp_path: Path, occupied, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every VLLM_PORT picked is taken: PORT_RETRIES starts, then the clash is the error."""
    real = server_base.free_port

    def taken_pick(host: str = "127.0.0.1", **kw) -> int:
        return occupied() if kw.get("span") == DIST_PORT_SPAN else real(host, **kw)

    monkeypatch.setattr(backends, "free_port", taken_pick)
    server = _server(tmp_path)
    with pytest.raises(TeacherStartError) as err:
        server.start()
    assert err.value.reason == PORT_IN_USE and len(_launches(tmp_path)) == PORT_RETRIES
    assert len({d for _, d in _launches(tmp_path)}) == PORT_RETRIES


def test_free_port_is_outside_the_ephemeral_range_with_room_above_it(occupied) -> None:
    lo, hi = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    if lo - server_base.PICK_FLOOR + 65535 - hi < 1000:
        pytest.skip(f"the ephemeral range {lo}-{hi} leaves no room: the kernel picks")
    for _ in range(50):
        port = free_port(span=DIST_PORT_SPAN)
        assert not lo <= port <= hi and port >= server_base.PICK_FLOOR
        block = range(port, port + DIST_PORT_SPAN)
        assert block.stop <= 65536
        for p in block:  # every port of the block is free now
            with socket.socket() as s:
                s.bind(("0.0.0.0", p))
    near = free_port()
    assert free_port(avoid=set(range(near - 100, near + 100))) not in range(near - 100, near + 100)
