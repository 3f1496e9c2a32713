"""Limits on rendering a security manager's template: a time budget and an output cap.

A template looping 10⁴×10⁴ used to freeze every input for 11 s, and `{{ 'x'*10**9 }}`
allocated 1 GB. Jinja's sandbox bounds what a template may *reach*, not what it may
*cost*, so:

- **size**: string/list repetition, concatenation, `%`-formatting and powers are
  checked before they run (the documented `intercepted_binops` / `call_binop` hook of
  the sandbox), calls and filters refuse size arguments beyond the cap (`'x'.ljust(10**9)`,
  `|center(10**9)`), and the output is streamed and cut at `OUTPUT_CAP` characters;
- **time**: a watchdog thread raises `TemplateTimeout` inside the rendering thread once
  the budget is spent (`PyThreadState_SetAsyncExc`). No library offers this: Jinja
  has no cancellation, a thread cannot be killed, and a subprocess per message would
  cost more than the rendering. Templates are pure Python bytecode, so the exception
  lands at the next instruction; the size checks above keep single C-level operations
  short.

A template that hits either limit fails like any other broken template: the caller
sends the built-in fallback message and records why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import heapq
import itertools
import operator
import re
import threading
import time
from typing import Any, Callable, Iterator

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment
from crisisbot.errors import TemplateLimit, TemplateTimeout  # noqa: F401 - re-exported for existing importers

OUTPUT_CAP = 1_000_000  # characters per rendered part (an email body is a few kB)
RENDER_BUDGET = 2.0  # seconds per message (all of its parts)
_POWER_BITS = 4096  # largest integer a template may compute with **
# a width or precision of a million or more, in a %-format or a {}-format
_WIDE_PERCENT = re.compile(r"%[-+ #0]*(\d{7,}|\d*\.\d{7,})")
_WIDE_BRACES = re.compile(r"\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _check_binop(op: str, left: Any, right: Any) -> None:
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            size = _size(seq)
            if size is not None and isinstance(times, int) and size * max(times, 0) > OUTPUT_CAP:
                raise TemplateLimit(f"a repetition would make {size * times:,} items (cap {OUTPUT_CAP:,})")
    elif op == "+":
        a, b = _size(left), _size(right)
        if a is not None and b is not None and a + b > OUTPUT_CAP:
            raise TemplateLimit(f"a concatenation would make {a + b:,} items (cap {OUTPUT_CAP:,})")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                right * max(abs(left).bit_length(), 1) > _POWER_BITS:
            raise TemplateLimit("a power would make a number too large to print")
    elif op == "%" and isinstance(left, str) and _WIDE_PERCENT.search(left):
        raise TemplateLimit("a format width over a million characters")


def _check_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in itertools.chain(args, kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > OUTPUT_CAP:
            raise TemplateLimit(f"a size argument of {value:,} (cap {OUTPUT_CAP:,})")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and (_WIDE_PERCENT.search(text) or _WIDE_BRACES.search(text)):
        raise TemplateLimit("a format width over a million characters")


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    skip = 2 if hasattr(fn, "jinja_pass_arg") else 1  # (context,) value, then the filter's arguments

    @functools.wraps(fn)  # keeps Jinja's pass_context/pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if name == "format" and len(args) >= skip:
            _check_format(args[skip - 1])
        _check_args(args[skip:], kwargs)
        return fn(*args, **kwargs)

    return bounded


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul, "+": operator.add, "**": operator.pow, "%": operator.mod,
    "-": operator.sub, "/": operator.truediv, "//": operator.floordiv,
}


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the size checks above."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _BINOPS[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        _check_args(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`'{:>1000000000}'.format(x)`: the width is in the string, not in the arguments."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format(value.__self__)
        return wrapped


def render_capped(template: Template, context: dict[str, Any]) -> str:
    """Render, streaming, and stop at OUTPUT_CAP characters."""
    out: list[str] = []
    total = 0
    for chunk in template.generate(context):
        total += len(chunk)
        if total > OUTPUT_CAP:
            raise TemplateLimit(f"the template wrote more than {OUTPUT_CAP:,} characters")
        out.append(chunk)
    return "".join(out)


class _Watchdog:
    """One thread raising TemplateTimeout in threads whose budget ran out."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # token -> thread id
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self._lock:
            token = next(self._tokens)
            self._armed[token] = threading.get_ident()
            heapq.heappush(self._heap, (time.monotonic() + seconds, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="crisisbot-render-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._lock:
            self._armed.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    self._lock.wait()
                    continue
                due, token = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
                thread_id = self._armed.pop(token)
                # under the lock: the rendering thread cannot have left its budget yet
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                           ctypes.py_object(TemplateTimeout))


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def time_budget(seconds: float = RENDER_BUDGET) -> Iterator[None]:
    """Raise TemplateTimeout in this thread if the block runs longer than `seconds`."""
    token = _WATCHDOG.arm(seconds)
    try:
        yield
    except TemplateTimeout as exc:
        raise TemplateTimeout(f"the template ran longer than its {seconds:g} s budget") from exc
    finally:
        _WATCHDOG.disarm(token)
