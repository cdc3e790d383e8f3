"""Runs oslo.messaging's own functional tests and reports each test as one JSON line on stdout.

Used by `harness oslo-tests`, inside the Python peer's venv. The suite is the one oslo.messaging 14.9.3
ships (oslo_messaging/tests/functional: test_functional.py and notify/test_logger.py), run with the
standard unittest loader, which honours the `load_tests` protocol testscenarios needs. The transport URLs
come from the environment as the suite expects (RPC_TRANSPORT_URL, NOTIFY_TRANSPORT_URL, AMQP1_BACKEND).

Usage: python oslo_tests.py [--list] [-k PATTERN]... [--test-timeout SECONDS] MODULE...

With PN_TRACE_FRM=1 in the environment (the harness sets it), proton writes every AMQP frame to stderr;
each test's frames are read back and the peer's refusals (`condition`, `description` of its end, detach
and close frames) are reported with the test: the broker's own words for why the driver failed.

Lines (one JSON object each):
  {"event": "collected", "tests": [id, ...]}
  {"event": "start", "id": ID}
  {"event": "result", "id": ID, "status": "passed"|"failed"|"error"|"skipped", "seconds": S,
   "reason": skip reason or failure message, "traceback": text, "log": [warning lines during the test],
   "conditions": [[condition, description], ...]}
  {"event": "done", "passed": N, "failed": N, "error": N, "skipped": N, "seconds": S}
Everything else the tests print goes to stderr.
"""

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
import traceback
import unittest

OUT = sys.stdout


def emit(obj):
    OUT.write(json.dumps(obj) + "\n")
    OUT.flush()


class TestTimeout(BaseException):
    """A test ran past --test-timeout. A BaseException, so that a test's own `except Exception`
    (a retry loop around a call that never returns) cannot swallow it."""


# Grace after --test-timeout before the watchdog ends a test that SIGALRM did not stop (blocked in C,
# or its teardown hanging): the runner reports it and exits; the harness runs the rest anew.
WATCHDOG_GRACE = 30.0
WATCHDOG = {"deadline": None, "test": None, "started": 0.0}


def start_watchdog(test_timeout):
    import threading

    def watch():
        while True:
            time.sleep(1.0)
            deadline = WATCHDOG["deadline"]
            if deadline is not None and time.monotonic() > deadline:
                emit({
                    "event": "result",
                    "id": WATCHDOG["test"],
                    "status": "error",
                    "seconds": round(time.monotonic() - WATCHDOG["started"], 3),
                    "reason": "TestTimeout: the test ran past %ss and did not stop; the runner "
                              "ended it" % test_timeout,
                    "traceback": None,
                    "log": [],
                    "conditions": [],
                })
                os._exit(4)

    threading.Thread(target=watch, daemon=True).start()


class LogCapture(logging.Handler):
    """Keeps the WARNING and worse records of the running test (the broker's words are there)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append("%s %s: %s" % (record.levelname, record.name, record.getMessage()))
        except Exception:  # a broken record must not break the run
            pass


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


CONDITION = re.compile(r'condition=:"([^"]+)"(?:, description="((?:[^"\\]|\\.)*)")?')
FRAME = re.compile(r"^\[0x[0-9a-f]+\]:(?: AMQP:FRAME:)?\d+ (<-|->) ")


class FrameTrap:
    """Sends fd 2 to a file during a test, then keeps the peer's error conditions from the proton frame
    trace and passes every other line on to the real stderr."""

    def __init__(self):
        self.real = os.dup(2)
        self.file = None

    def start(self):
        import tempfile
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self.file.fileno(), 2)

    def stop(self):
        sys.stderr.flush()
        os.dup2(self.real, 2)
        if self.file is None:
            return []
        self.file.seek(0)
        found = []
        for raw in self.file:
            line = raw.decode("utf-8", "replace")
            if FRAME.match(line):
                if "<-" in line and ("@end" in line or "@detach" in line or "@close" in line):
                    for m in CONDITION.finditer(line):
                        description = (m.group(2) or "").replace("\\x22", '"')
                        pair = [m.group(1), description]
                        if pair not in found:
                            found.append(pair)
            else:
                os.write(self.real, raw)
        self.file.close()
        self.file = None
        return found


class JsonResult(unittest.TestResult):
    def __init__(self, test_timeout):
        super().__init__()
        self.test_timeout = test_timeout
        self.counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        self.capture = LogCapture()
        self.started = 0.0
        self.reported = False
        self.trap = FrameTrap() if os.environ.get("PN_TRACE_FRM") == "1" else None
        self.conditions = []

    def startTest(self, test):
        super().startTest(test)
        self.capture.lines = []
        self.started = time.monotonic()
        self.reported = False
        self.conditions = []
        if self.trap:
            self.trap.start()
        emit({"event": "start", "id": test.id()})
        if self.test_timeout:
            signal.alarm(self.test_timeout)
            WATCHDOG.update(test=test.id(), started=self.started,
                            deadline=self.started + self.test_timeout + WATCHDOG_GRACE)

    def stopTest(self, test):
        signal.alarm(0)
        WATCHDOG["deadline"] = None
        if self.trap:
            self.conditions = self.trap.stop()
        if not self.reported:
            self._report(test, "passed")
        self.flush()
        super().stopTest(test)

    def _report(self, test, status, reason=None, tb=None):
        self.pending = (test, status, reason, tb)
        self.reported = True

    def flush(self):
        if not getattr(self, "pending", None):
            return
        test, status, reason, tb = self.pending
        self.pending = None
        self.counts[status] += 1
        emit({
            "event": "result",
            "id": test.id(),
            "status": status,
            "seconds": round(time.monotonic() - self.started, 3),
            "reason": reason,
            "traceback": tb,
            "log": self.capture.lines[-50:],
            "conditions": self.conditions,
        })

    def _failure(self, test, err, status):
        exc_type, exc, tb = err
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        message = "%s: %s" % (exc_type.__name__, exc)
        if exc_type is TestTimeout:
            message = "TestTimeout: the test ran longer than %ss" % self.test_timeout
        self._report(test, status, message.splitlines()[0] if message else status, text)

    def addError(self, test, err):
        super().addError(test, err)
        self._failure(test, err, "error")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._failure(test, err, "failed")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._report(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._report(test, "passed", "expected failure (unittest)")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._report(test, "failed", "unexpected success")


def on_alarm(signum, frame):
    raise TestTimeout()


def exit_with_parent():
    """Ends this process when stdin closes: the harness holds its write end, so a harness that exits
    (Ctrl-C, a crash, kill -9) takes the test run with it."""
    import os
    import threading

    def watch():
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("modules", nargs="+")
    p.add_argument("-k", dest="patterns", action="append", default=[])
    p.add_argument("--id", dest="ids", action="append", default=[],
                   help="only this test (exact id; repeatable)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--test-timeout", type=int, default=0)
    args = p.parse_args(argv)
    exit_with_parent()
    # The tests' own output and logging must not reach the JSON channel.
    global OUT
    OUT = sys.stdout
    sys.stdout = sys.stderr
    logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger().setLevel(logging.WARNING)
    loader = unittest.TestLoader()
    tests = []
    for m in args.modules:
        tests.extend(iter_tests(loader.loadTestsFromName(m)))
    if args.patterns:
        tests = [t for t in tests if any(k in t.id() for k in args.patterns)]
    if args.ids:
        wanted = set(args.ids)
        tests = [t for t in tests if t.id() in wanted]
    emit({"event": "collected", "tests": [t.id() for t in tests]})
    if args.list:
        return 0
    signal.signal(signal.SIGALRM, on_alarm)
    if args.test_timeout:
        start_watchdog(args.test_timeout)
    result = JsonResult(args.test_timeout)
    logging.getLogger().addHandler(result.capture)
    t0 = time.monotonic()
    for t in tests:
        t(result)
    done = dict(result.counts)
    done.update({"event": "done", "seconds": round(time.monotonic() - t0, 3)})
    emit(done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
