"""Reading HTTP/1.1 responses off a keep-alive connection, for the built-in load generators."""

from __future__ import annotations


def take_response(buf: bytearray) -> int | None:
    """Remove one complete response (head and Content-Length body) from the front of ``buf`` and
    return its status code; None, leaving ``buf`` as it is, while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    i = head.find(b"content-length:")
    j = head.find(b"\r\n", i)
    need = end + 4 + int(head[i + 15 : j if j > 0 else None])
    if len(buf) < need:
        return None
    del buf[:need]
    return int(head[9:12])
