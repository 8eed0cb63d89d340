"""A headless Chromium driven over the DevTools protocol through a pipe: no driver binary, no
Python package, no port. The HTML report's tests load pages with it, click, read the DOM, and
collect console errors, uncaught exceptions and network requests.

`python tests/browser.py PAGE.html OUT.png [--click SELECTOR]` saves a screenshot of the whole
page (docs/report.png is made this way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAC_APPS = (
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
INSTALL_HINT = (
    "install Debian's chromium (scripts/setup.sh --test does where apt-get exists) "
    "or set NIAH_CHROMIUM to a Chromium or Chrome binary"
)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """The browser binary: $NIAH_CHROMIUM, else the first of BROWSER_NAMES on PATH, else an
    installed macOS app."""
    given = os.environ.get("NIAH_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    on_path = next((p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    return on_path or next((p for p in MAC_APPS if Path(p).is_file()), None)


def _browser_env() -> dict:
    """The environment without LD_PRELOAD: the OpenBLAS preload niah's test process runs with
    (niah.blas) makes Chromium's GPU process fail to start."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


class Browser:
    """One headless browser process with one page. Methods block until the answer arrives."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900, timeout: float = 30):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="niah-chromium-")
        self._log = open(Path(self.profile) / "stderr.log", "wb")  # noqa: SIM115 (closed in close())
        to_child, self._write = os.pipe()  # commands: we write, the browser reads fd 3
        self._read, from_child = os.pipe()  # answers: the browser writes fd 4

        def fds():  # in the child: put the pipe ends where --remote-debugging-pipe looks
            high = (os.dup(to_child), os.dup(from_child))  # either might be 3 or 4 already
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
                "--mute-audio",
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=fds,
            pass_fds=(3, 4),
            env=_browser_env(),
        )  # noqa: PLW1509 (dups 2 fds)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    # --- protocol -------------------------------------------------------------------------
    def send(self, method: str, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise BrowserError("the browser stopped answering" + self._last_words())
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise BrowserError("the browser closed its pipe" + self._last_words())
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _last_words(self) -> str:
        """The browser's fatal messages, if it wrote any."""
        self._log.flush()
        text = (Path(self.profile) / "stderr.log").read_text(errors="replace")
        fatal = [line for line in text.splitlines() if "FATAL" in line]
        return (": " + " | ".join(fatal[-3:])) if fatal else ""

    def wait_for(self, method: str) -> dict:
        seen = len(self.events)
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            self.events.append(self._receive())

    # --- page -----------------------------------------------------------------------------
    def open(self, path: Path) -> None:
        """Load a file and wait for its load event; earlier events are forgotten."""
        self.events.clear()
        self.send("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def eval(self, expression: str):
        """The JSON value of a JavaScript expression (a thrown error raises BrowserError)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(
                f"{expression!r} threw: {result['exceptionDetails'].get('text')} "
                f"{result['exceptionDetails'].get('exception', {}).get('description', '')}"
            )
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and uncaught exceptions since the last open()."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:400])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + json.dumps(p.get("args"))[:400])
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append("log: " + p["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        """URLs the page asked for since the last open(), besides the page itself."""
        urls = [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]
        return urls[1:]

    def screenshot(self, out: Path, *, width: int = 1280) -> None:
        for _ in range(2):  # the height at the new width
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                deviceScaleFactor=1,
                mobile=False,
                height=int(self.eval("document.body.scrollHeight")) + 16,
            )
        import base64

        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(out).write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Screenshot a page in headless Chromium.")
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--click", help="CSS selector of an element to click first")
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print(f"no browser found: {INSTALL_HINT}", file=sys.stderr)
        return 2
    with Browser(binary, width=args.width) as browser:
        browser.open(args.page)
        if args.click:
            browser.eval(f"document.querySelector({json.dumps(args.click)}).click()")
        problems = browser.problems() + [f"request: {u}" for u in browser.requests()]
        browser.screenshot(args.out, width=args.width)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
