"""An OpenAI-compatible endpoint's life: start it (the run file's `launch` command), wait until it
answers, ask what it is, and stop it; and run the load generator against it with a deadline.

Every wait here has a timeout and every child process is stopped by the caller's `finally`, so an
unreachable endpoint, a server that never becomes ready or a load generator that hangs ends as a
recorded error, never as a hung run. Only the URL the run file names is contacted (a local port
in tests; never the EC2 metadata address).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

READY_PATHS = ("/health", "/v1/models")  # vLLM answers both; /health alone is not in the OpenAI API
STOP_GRACE_S = 30.0  # after SIGTERM, how long a server may take to exit before SIGKILL
POLL_S = 0.5


class EndpointError(RuntimeError):
    """The endpoint or the load generator failed; the message is the record's reason."""


def check_url(url: str) -> str:
    """The endpoint as a clean base URL; credentials in it are refused (they would be recorded)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint must be an http(s)://host:port URL, got {url!r}")
    if parts.username or parts.password:
        raise ValueError("endpoint must not carry credentials (user:password@); the API key goes in OPENAI_API_KEY")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


def get_json(url: str, timeout_s: float) -> tuple[int, object]:
    """(HTTP status, parsed JSON body or None). Connection failures raise OSError (URLError)."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        req.add_header("Authorization", f"Bearer {key}")  # sent, never recorded
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - the run file's URL
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    try:
        return status, json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return status, None


def wait_ready(base: str, timeout_s: float, server: Server | None = None) -> str:
    """Poll the endpoint until /health or /v1/models answers 200; returns the path that did.
    Raises EndpointError after `timeout_s`, or as soon as a launched server exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        if server is not None and server.proc.poll() is not None:
            raise EndpointError(
                f"server exited with code {server.proc.returncode} before it was ready: {server.tail()}"
            )
        for path in READY_PATHS:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EndpointError(f"endpoint {base} not ready after {timeout_s:g} s ({last})")
            try:
                status, _ = get_json(base + path, min(5.0, left))
            except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
                last = f"{path}: {getattr(exc, 'reason', exc)}"
                continue
            if status == 200:
                return path
            last = f"{path}: HTTP {status}"
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def describe(base: str, timeout_s: float = 10.0) -> dict:
    """What the server says it is: vLLM's /version and the models /v1/models lists. Missing
    answers are recorded as missing (None with the reason), never guessed."""
    out: dict = {"version": None, "version_source": None, "models": [], "owned_by": None, "max_model_len": None}
    try:
        status, body = get_json(base + "/version", timeout_s)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
            out.update(version=body["version"], version_source="/version")
        else:
            out["version_reason"] = f"/version: HTTP {status}"
    except OSError as exc:
        out["version_reason"] = f"/version: {getattr(exc, 'reason', exc)}"
    try:
        status, body = get_json(base + "/v1/models", timeout_s)
    except OSError:
        return out
    data = body.get("data") if isinstance(body, dict) else None
    if status == 200 and isinstance(data, list):
        models = [m for m in data if isinstance(m, dict)]
        out["models"] = [str(m.get("id")) for m in models]
        if models:
            out["owned_by"] = models[0].get("owned_by")
            out["max_model_len"] = models[0].get("max_model_len")  # vLLM adds it; others may not
    return out


@dataclass
class Server:
    """A server the run launched: its process group and its log (stdout and stderr together)."""

    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def launch(argv: list[str], log_dir: Path | None = None) -> Server:
    """Start the server in its own process group (so stop() reaches its workers too)."""
    fd, log = tempfile.mkstemp(prefix="ppbench-server-", suffix=".log", dir=log_dir)
    try:
        proc = subprocess.Popen(
            argv, stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    except OSError as exc:
        raise EndpointError(f"cannot start the server ({argv[0]}): {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return Server(proc, Path(log))


def stop(server: Server, grace_s: float = STOP_GRACE_S) -> int | None:
    """SIGTERM the server's process group, SIGKILL it after `grace_s`; returns the exit code."""
    return stop_group(server.proc, grace_s)


def stop_group(proc: subprocess.Popen, grace_s: float) -> int | None:
    """Stop a child that leads its own process group (started with start_new_session) and every
    worker in it: SIGTERM, SIGKILL after `grace_s`, then SIGKILL to whatever the group left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    _reap_group(proc.pid)
    return proc.poll()


def _reap_group(pgid: int) -> None:
    """Workers the server left behind in its group (vLLM's engine core) get SIGKILL too."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_generator(argv: list[str], timeout_s: float, log: Path) -> int:
    """Run the load generator to completion or `timeout_s`; its output goes to `log`.
    Returns its exit code; a timeout kills its process group and raises EndpointError."""
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            raise EndpointError(f"cannot run the load generator ({argv[0]}): {exc.strerror or exc}") from None
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _reap_group(proc.pid)
            proc.wait(timeout=10)
            raise EndpointError(f"load generator did not finish within {timeout_s:g} s (killed)") from None
