"""The embedded default (`tollgate serve`) for the end-to-end checks: started on a free loopback
port with its data in a given directory, and waited for until it is healthy."""
import socket
import subprocess
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, data, env, stdout, stderr):
    """Starts `binary serve` on a free port; returns (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
        stdout=stdout, stderr=stderr, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(base):
    """Waits (up to about 30 s) until GET /healthz answers 200."""
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gateway did not become healthy")
