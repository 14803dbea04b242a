"""Console and rotating-file logging in the spec's line format, with secrets redacted.

Redaction happens in a handler filter, so it covers every logger (ours, uvicorn's access log,
httpx2, tracebacks) without each call site having to remember it. Two nets: the known secret
values from the configuration, and patterns for secrets we never saw (a browser's JWT, an
`Authorization` header, URL userinfo, `token=` query strings).

Records are written by a thread of their own (the standard library's queue handler and
listener): the event loop only queues them. Redacting, formatting and writing a line to the
console and the file took about 0.2 ms of the loop's time per request (the access line), and
a slow disk (an SD card) would have stalled every request and stream while it wrote.
"""

from __future__ import annotations

import atexit
import logging
import logging.config
import logging.handlers
import queue
import re
import time
from collections.abc import Iterable
from pathlib import Path

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
MASK = "***"
LINGER = 0.05  # seconds the logging thread waits for more lines before it sleeps

_PATTERNS = [
    # JWTs: three base64url parts, the first two starting with '{"' encoded.
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {MASK}"),
    (re.compile(r"(?i)(PVEAPIToken[= ])[^\s;'\"]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\n]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)(cookie['\"]?\s*[:=]\s*['\"]?)[^'\"}\n]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)([?&](?:token|jwt|password|secret|key)=)[^&\s\"]+"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b((?:password|passwd|secret)=)[^&\s]+"), rf"\1{MASK}"),
    (re.compile(r'(?i)("(?:password|secret|token|jwt)"\s*:\s*")[^"]*'), rf"\1{MASK}"),
    (re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"), rf"\1{MASK}@"),
]


class _Redactor:
    def __init__(self) -> None:
        self.secrets: list[str] = []

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a token is masked whole before its secret half is looked for.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


redact = _Redactor()


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacted, so no handler can print the raw one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # by the first of the handlers
            return True
        record.redacted = True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class LineFormatter(logging.Formatter):
    """The spec's line, made once per record: the console and the file both print it, and the
    file's rollover check makes it again to measure it."""

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "spec_line", None)
        if line is None:
            line = record.spec_line = super().format(record)
        return line


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues the record itself, its message merged with its arguments (they might change
    before the thread writes it). The standard one also formats the record and copies it, on
    the event loop: work the thread does anyway, and no other handler shares the record."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()
        record.args = None
        return record


class _Listener(logging.handlers.QueueListener):
    """Wakes once per LINGER when lines keep coming, not once per line: each wake-up made the
    thread and the event loop trade the GIL (a request's access line, about 0.2 ms of CPU in
    all). Lines reach the console and the file at most LINGER later."""

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            time.sleep(LINGER)
            return self.queue.get(block)


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str, log_dir: Path, secrets: Iterable[str] = ()) -> None:
    """Console always, `log_dir/backend.log` rotated at 10 MB x 5, both redacted, both
    written by the logging thread. Lines still queued are written at exit (`end_log_thread`)."""
    global _listener
    end_log_thread()
    redact.set_secrets(secrets)
    # The line format uses none of these: not collecting them for every record saves the
    # event loop a frame walk and a few calls per line (the logging HOWTO's "Optimization").
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    log_dir.mkdir(parents=True, exist_ok=True)
    handler_common = {"formatter": "spec", "filters": ["redact"]}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"redact": {"()": RedactingFilter}},
            "formatters": {"spec": {"()": LineFormatter, "format": LOG_FORMAT}},
            "handlers": {
                "console": {"class": "logging.StreamHandler", **handler_common},
                "file": {
                    "class": "logging.handlers.RotatingFileHandler",
                    "filename": str(log_dir / "backend.log"),
                    "maxBytes": 10 * 1024 * 1024,
                    "backupCount": 5,
                    "encoding": "utf-8",
                    **handler_common,
                },
            },
            "root": {"level": level, "handlers": ["console", "file"]},
            "loggers": {
                # uvicorn's loggers keep their own handlers unless told otherwise.
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": True},
                # One line per upstream request is noise at INFO; our client logs failures.
                "httpx2": {"level": "WARNING"},
                "httpcore2": {"level": "WARNING"},
                "aiosqlite": {"level": "WARNING"},
                "asyncio": {"level": "WARNING"},
            },
        }
    )
    root = logging.getLogger()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = _Listener(records, *root.handlers, respect_handler_level=True)
    root.handlers = [_QueueHandler(records)]
    _listener.start()


def end_log_thread() -> None:
    """Write every queued line and end the logging thread; later lines are written directly,
    as they are logged (a new setup starts a thread again)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        logging.getLogger().handlers = list(_listener.handlers)
        _listener = None


# Registered after logging's own exit hook, so run before it: the lines are written, then the
# handlers closed.
atexit.register(end_log_thread)
