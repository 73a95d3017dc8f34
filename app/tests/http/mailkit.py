"""A real SMTP server on loopback for the account tests: Debian's
python3-aiosmtpd, collecting every message it accepts, so that a test
reads the link or code Kiln mailed the way a person would."""

import email
import email.policy
import re
import threading
import time

from aiosmtpd.controller import Controller

import kilnhttp


class _Sink:
    def __init__(self):
        self.messages = []
        self.cv = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.cv:
            self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                                  "subject": str(msg["subject"]), "headers": msg,
                                  "text": msg.get_content()})
            self.cv.notify_all()
        return "250 OK"


class SmtpServer:
    def __init__(self):
        self.port = kilnhttp.free_port()
        self.sink = _Sink()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    def env(self):
        return {"SMTP_URL": self.url, "EMAIL_FROM": "Kiln Test <no-reply@kiln.test>"}

    def messages_to(self, addr):
        with self.sink.cv:
            return [m for m in self.sink.messages if addr in m["to"]]

    def wait_for(self, addr, count=1, timeout=15.0):
        """The first ``count`` messages to addr, waiting for them."""
        deadline = time.monotonic() + timeout
        with self.sink.cv:
            while True:
                got = [m for m in self.sink.messages if addr in m["to"]]
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail #{count} to {addr} within {timeout} s "
                                         f"(got {len(got)})")
                self.sink.cv.wait(left)


def token_of(msg):
    m = re.search(r"[?&]token=([A-Za-z0-9_-]+)", msg["text"])
    assert m, f"no link with a token in: {msg['text']!r}"
    return m.group(1)
