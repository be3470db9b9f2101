"""A headless Chromium that the tests drive over the DevTools protocol, on a pipe.

One browser process serves every page of a test session: :meth:`HeadlessChromium.inspect`
opens a page in a new tab, waits for its load event, evaluates a JavaScript expression
(awaiting it if it is a promise) and returns its value. The protocol runs on the
pipe Chromium opens with ``--remote-debugging-pipe``: it reads commands from file
descriptor 3 and writes replies to 4, each a JSON message ended by a NUL byte. No port
is opened, and no package beyond the standard library is needed.

Host names resolve to nothing (``--host-resolver-rules``), so a page that would load
scripts from the network (the handouts' MathJax) neither waits for them nor reaches
out; what a test checks must be in the page itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

#: Debian's package name first, then the names other systems use.
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")

#: The flags that run Chromium headless as root in a container, without a GPU, with no
#: profile of its own and no background traffic.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)

#: Seconds to wait for a reply or for a page's load event.
TIMEOUT_SECONDS = 60


def find_chromium() -> str | None:
    """The path of a Chromium executable on PATH, or None."""
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    """Chromium exited, did not answer in time, or answered a command with an error."""


class HeadlessChromium:
    """``with HeadlessChromium(path) as browser: browser.inspect(url, expression)``."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []

    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(prefix="normlab-chromium-")
        command_read, self._command_write = os.pipe()
        self._reply_read, reply_write = os.pipe()
        # Chromium wants the pipe on descriptors 3 and 4: the shell moves them there.
        script = f'exec "$0" "$@" 3<&{command_read} 4>&{reply_write}'
        self._process = subprocess.Popen(
            [
                "bash",
                "-c",
                script,
                self.executable,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            pass_fds=(command_read, reply_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(command_read)
        os.close(reply_write)
        return self

    def __exit__(self, *exc_info) -> None:
        with contextlib.suppress(BrowserError, OSError):  # it may have exited already
            self.send("Browser.close")
        try:
            self._process.wait(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._command_write)
        os.close(self._reply_read)
        self._process.stderr.close()
        self._profile.cleanup()

    # -- the protocol ----------------------------------------------------------

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for(self, method: str, session: str) -> dict:
        """The first event ``method`` of ``session``, waiting for it if it has not come yet."""
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(index)
            self._events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._reply_read], [], [], max(0.0, remaining))
            if not ready:
                raise BrowserError(f"Chromium sent nothing for {TIMEOUT_SECONDS} s")
            chunk = os.read(self._reply_read, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self._process.stderr.read().decode()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # -- pages -----------------------------------------------------------------

    def inspect(self, url: str, expression: str):
        """Load ``url`` in a new tab, then the value of the JavaScript ``expression`` there."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        try:
            self.send("Page.enable", session=session)
            self.send("Page.navigate", {"url": url}, session=session)
            self.wait_for("Page.loadEventFired", session)
            result = self.send(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True, "awaitPromise": True},
                session=session,
            )
        finally:
            self.send("Target.closeTarget", {"targetId": target})
        if "exceptionDetails" in result:
            raise BrowserError(f"the page's script failed: {result['exceptionDetails']}")
        return result["result"].get("value")
