"""Read the kernel's messages as the browser receives them, to catch errors no cell displays.

An exception in a widget callback does not land in any cell: the kernel reports it while handling a
``comm_msg`` from the front-end, and JupyterLab only lists it in its log console. Watching the kernel
websocket is how the harness sees it.

Frames use Jupyter's websocket protocol ``v1.kernel.websocket.jupyter.org`` (binary: a count n, then n
little-endian uint64 offsets, then channel, header, parent header, metadata, content, buffers) or the
older all-JSON text frames.
"""

from __future__ import annotations

import json

TRACEBACK_MARK = "Traceback (most recent call last)"


def parse_frame(frame: bytes | str) -> tuple[str, dict, dict, bytes] | None:
    """(channel, header, parent_header, raw content) of one websocket frame, or None if not a message."""
    if isinstance(frame, str):
        try:
            message = json.loads(frame)
        except ValueError:
            return None
        if not isinstance(message, dict) or "header" not in message:
            return None
        content = json.dumps(message.get("content", {})).encode()
        return message.get("channel", ""), message["header"], message.get("parent_header", {}), content
    if len(frame) < 8:
        return None
    count = int.from_bytes(frame[:8], "little")
    if count < 5 or len(frame) < 8 * (count + 1):
        return None
    offsets = [int.from_bytes(frame[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    parts = [frame[offsets[i]: offsets[i + 1]] for i in range(count - 1)]
    channel, header, parent = parts[0].decode(), json.loads(parts[1]), json.loads(parts[2] or b"{}")
    return channel, header, parent, parts[4]


class KernelMessageLog:
    """Collects kernel errors whose cause is not a cell's execution (so no cell output shows them)."""

    def __init__(self):
        self._outside_cells: list[str] = []

    def add_frame(self, frame: bytes | str) -> None:
        # Cheap filter first: most frames are status messages or multi-megabyte widget state.
        head = frame[:1200]
        if isinstance(head, bytes):
            head = head.decode("utf-8", "replace")
        if '"error"' not in head and '"stream"' not in head:
            return
        parsed = parse_frame(frame)
        if parsed is None:
            return
        channel, header, parent, raw_content = parsed
        if channel != "iopub" or parent.get("msg_type") == "execute_request":
            return  # a cell's own output: the page shows it, and the harness reads it there
        content = json.loads(raw_content)
        if header.get("msg_type") == "error":
            self._outside_cells.append(f"{content.get('ename')}: {content.get('evalue')}")
        elif header.get("msg_type") == "stream" and TRACEBACK_MARK in content.get("text", ""):
            lines = [line for line in content["text"].strip().splitlines() if line.strip()]
            self._outside_cells.append(lines[-1] if lines else TRACEBACK_MARK)

    def errors_outside_cells(self) -> list[str]:
        return list(dict.fromkeys(self._outside_cells))
