"""A helper process's log lines (the web process) say where they come from, in both formats."""

from __future__ import annotations

import io
import json
import logging
import os

from crisisbot import logs


def _line(fmt: str) -> str:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logs.setup("INFO", fmt, stream=stream, origin="web")
        logging.getLogger("crisisbot.web.console").info("hello")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    return stream.getvalue()


def test_text_lines_name_the_process():
    assert f"(web pid {os.getpid()}) crisisbot.web.console: hello" in _line("text")


def test_json_lines_carry_the_origin():
    entry = json.loads(_line("json"))
    assert entry["origin"] == "web" and entry["message"] == "hello"
