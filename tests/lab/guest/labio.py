"""Guest side of the lab's data channel: named payloads sent to the host over serial port ttyS1.

Each payload is framed as ``=====BEGIN <name> <nbytes> <sha256>=====``, base64 lines of a
gzip'd body, then ``=====END <name>=====``. The console (ttyS0) carries kernel messages and
progress lines only, so payloads are never interleaved with them.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import sys
import tarfile
import termios

DATA_TTY = "/dev/ttyS1"


def _open_data() -> io.BufferedWriter:
    fd = os.open(DATA_TTY, os.O_WRONLY | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.OPOST  # no \n -> \r\n translation
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return os.fdopen(fd, "wb", buffering=1 << 16)


def send(name: str, body: bytes) -> None:
    """Sends one named payload to the host (gzip + base64 between markers)."""
    packed = gzip.compress(body, 6)
    digest = hashlib.sha256(body).hexdigest()
    enc = base64.encodebytes(packed)
    with _open_data() as fh:
        fh.write(f"=====BEGIN {name} {len(body)} {digest}=====\n".encode())
        fh.write(enc)
        fh.write(f"=====END {name}=====\n".encode())
        fh.flush()
        termios.tcdrain(fh.fileno())
    say(f"sent {name}: {len(body)} bytes ({len(enc)} on the wire)")


def send_tree(name: str, path: str) -> None:
    """Sends a folder as an uncompressed tar (the frame gzips it), symlinks kept as symlinks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=".")
    send(name, buf.getvalue())


def say(msg: str) -> None:
    """Prints a progress line on the console (ttyS0)."""
    print(f"lab: {msg}", flush=True)


def fail(msg: str) -> None:
    send("error", msg.encode())
    say("ERROR " + msg)
    sys.exit(1)
