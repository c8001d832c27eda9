#!/usr/bin/env python3
"""Open COUNT keep-alive connections to 127.0.0.1:PORT, send one request on each, hold them.

Prints "ready N" once every response has been read. Then waits for SIGTERM (or --hold
seconds), prints "open N" -- how many connections the server still had open -- and exits.
Connections are opened one after another, so the proxy needs only one upstream connection
and its memory growth is due to the client connections alone.
"""

import argparse
import signal
import socket
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def read_response(sock):
    """Reads one response (Content-Length or chunked body) and returns its status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed before the response headers")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()

    def done():
        if "content-length" in headers:
            return len(body) >= int(headers["content-length"])
        if headers.get("transfer-encoding") == "chunked":
            return body.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in body
        raise ValueError("response has neither Content-Length nor chunked encoding")

    while not done():
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        body += chunk
    return int(lines[0].split()[1])


def still_open(sock):
    sock.setblocking(False)  # with a timeout set, Python would wait out the timeout instead
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=60.0, help="give up waiting after this long")
    args = parser.parse_args()

    # Block SIGTERM so it is queued for sigtimedwait instead of killing us before "open N".
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    socks = []
    for i in range(args.count):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        sock.sendall(REQUEST)
        status = read_response(sock)
        if status != 200:
            sys.exit(f"connection {i}: status {status}")
        socks.append(sock)
    print("ready", len(socks), flush=True)

    signal.sigtimedwait({signal.SIGTERM}, args.hold)
    print("open", sum(still_open(s) for s in socks), flush=True)


if __name__ == "__main__":
    main()
