"""Progress of a running execution: bars on a terminal, periodic log lines elsewhere.

Every execution (``Dataset._batches`` / ``Dataset._drain``) runs inside a
:class:`ProgressReporter`. What it shows is governed by the current ``DataContext``:

* ``enable_progress_bars=False``: nothing at all (no thread is started).
* ``enable_operator_progress_bars=False`` (or ``execution_options.verbose_progress=False``,
  as in Ray): only the overall line, no per-operator lines.
* ``progress_bar_log_interval``: seconds between two log lines when stderr is not a
  terminal.

Nothing is shown for executions shorter than about one second, so quick calls such as
``take(5)`` stay silent.

**On a terminal** (``sys.stderr.isatty()``) an overall line and one line per operator are
drawn on stderr and redrawn in place about five times per second (ANSI: carriage return,
cursor up, clear line). While they are on screen ``sys.stdout`` and ``sys.stderr`` (and the
``logging`` stream handlers that write to them) are replaced by thin proxies: a write first
clears the bars, then writes the text, and redraws the bars once the text ends a line, so
the program's own output is never garbled. The originals are put back by ``stop()``, which
also draws the final state once and leaves it on screen.

**Elsewhere** (a file, a pipe, CI, a notebook) one line is logged every
``progress_bar_log_interval`` seconds, plus a final line when the execution ends (only if a
line was logged before). The line goes to the ``"millstream"`` logger at INFO when logging
is configured (the logger, or one of its ancestors, has a handler), so it follows the
application's logging setup (level, format, destination); when logging is not configured at
all it is written to stderr instead, so it is never silently lost.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from typing import Callable, List, Optional

logger = logging.getLogger("millstream")

#: Seconds an execution runs before anything is shown.
SHOW_AFTER_S = 1.0
#: Seconds between two redraws of the bars on a terminal.
REFRESH_S = 0.2
#: Window over which the rows/s rate is measured.
_RATE_WINDOW_S = 3.0

# ---- formatting -------------------------------------------------------------------------


def format_bytes(n) -> str:
    """Bytes in binary units, like the engine's stats text: ``800 B``, ``3.1 MiB``."""
    n = max(0, int(n or 0))
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def format_count(n) -> str:
    """A row count, exact below 10,000 and with an SI suffix above: ``1234``, ``45.0k``."""
    n = int(n or 0)
    if abs(n) < 10_000:
        return str(n)
    value = float(n)
    for unit in ("k", "M", "G", "T", "P"):
        value /= 1000.0
        if abs(value) < 999.5 or unit == "P":
            return f"{value:.3g}{unit}" if abs(value) >= 100 else f"{value:.1f}{unit}"
    return str(n)  # pragma: no cover


def format_duration(seconds) -> str:
    """``mm:ss`` below an hour, ``h:mm:ss`` above (as tqdm does)."""
    seconds = max(0, int(seconds or 0))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


_WRAPPED = re.compile(r"^(\w+?)Operator\[(.*)\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _label(op) -> str:
    """The name progress shows for an operator (a ``_core.OperatorStats``): the engine's
    ``display_name`` field (what the user asked, e.g. ``ReadRange->MapBatches(f)``), else
    one derived from its name."""
    if op.display_name:
        return _CONTROL.sub("?", str(op.display_name))
    return display_name(op.name or "?")


def display_name(name: str) -> str:
    """The operator's name as users wrote the pipeline, from its physical name (for stats
    without a ``display_name``).

    ``TaskPoolMapOperator[ReadRange->MapBatches(f)]`` -> ``ReadRange->MapBatches(f)``,
    ``ActorPoolMapOperator[MapBatches(M)] (actors 1..4)`` -> ``MapBatches(M)``,
    ``LimitOperator[10]`` -> ``Limit[10]``.
    """
    name = _CONTROL.sub("?", str(name))
    match = _WRAPPED.match(name)
    if not match:
        return name
    kind, inner = match.group(1), match.group(2)
    if kind.endswith("Map"):
        return inner
    return f"{kind}[{inner}]"


def _fraction(done: int, total: int) -> Optional[float]:
    if total is None or total < 0:
        return None
    if total == 0:
        return 1.0
    return min(1.0, max(0.0, done / total))


class _Glyphs:
    def __init__(self, unicode: bool):
        if unicode:
            self.full, self.partial, self.empty = "█", " ▏▎▍▌▋▊▉", " "
            self.left, self.right, self.ellipsis, self.done = "▕", "▏", "…", "✔"
        else:
            self.full, self.partial, self.empty = "#", "", "-"
            self.left, self.right, self.ellipsis, self.done = "[", "]", "~", "done"

    def bar(self, fraction: Optional[float], width: int) -> str:
        if width <= 0:
            return ""
        if fraction is None:
            return self.left + " " * width + self.right
        cells = fraction * width
        full = int(cells)
        text = self.full * full
        if full < width:
            if self.partial:
                text += self.partial[int((cells - full) * len(self.partial))]
            else:
                text += self.empty
            text += self.empty * (width - full - 1)
        return self.left + text + self.right

    def truncate(self, text: str, width: int) -> str:
        if len(text) <= width:
            return text
        if width <= len(self.ellipsis):
            return text[:max(0, width)]
        return text[: width - len(self.ellipsis)] + self.ellipsis


def _supports_unicode(stream) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "█▏▕…✔".encode(encoding)
        return True
    except (LookupError, UnicodeError):
        return False


class _Snapshot:
    """One reading of the execution's counters, with what the renderer derives from it."""

    def __init__(self, stats, held_bytes, elapsed_s, rate, final):
        self.stats = stats  # a _core.ExecutionStats
        self.operators = list(stats.operators)
        self.held_bytes = held_bytes
        self.elapsed_s = elapsed_s
        self.rate = rate
        self.final = final
        last = self.operators[-1] if self.operators else None
        self.rows = last.rows_out if last else 0
        self.estimate = last.estimated_rows_out if last else -1

    @property
    def finished(self) -> bool:
        if self.stats.finished:
            return True
        return bool(self.operators) and all(op.done for op in self.operators)


def _op_stats(op, glyphs: _Glyphs, *, compact: bool) -> List[str]:
    """The parts describing one operator's live state (after its rows)."""
    parts = []
    done = op.done
    if not done:
        parts.append(f"{op.active_tasks} {'running' if compact else 'tasks running'}")
        if op.queued_bytes > 0:
            parts.append(f"{format_bytes(op.queued_bytes)} queued")
        elif op.queued_bundles > 0:
            parts.append(f"{op.queued_bundles} queued")
    actors = op.actors
    if actors > 0 or (not done and op.peak_actors > 0):
        parts.append(f"{actors} actor{'s' if actors != 1 else ''}")
    if done:
        parts.append(glyphs.done if compact else "done")
    return parts


def _rows_text(done: int, estimate: int, exact: bool) -> str:
    fmt = str if exact else format_count
    if estimate is not None and estimate >= 0:
        return f"{fmt(done)}/{fmt(estimate)} rows"
    return f"{fmt(done)} rows"


def _memory_text(snap: _Snapshot, *, verbose: bool) -> str:
    """Bytes of blocks held now (when the execution can tell) or at the peak, vs the limit."""
    limit = snap.stats.memory_limit
    peak = snap.stats.peak_bytes
    of = f"/{format_bytes(limit)}" if limit > 0 else ""
    if snap.held_bytes is not None and not snap.final:
        held = f"mem {format_bytes(snap.held_bytes)}{of}"
        return f"{held} (peak {format_bytes(peak)})" if verbose else held
    return f"mem peak {format_bytes(peak)}{of}"


def _eta_s(snap: _Snapshot) -> Optional[float]:
    if snap.final or snap.rate is None or snap.rate <= 0 or snap.estimate <= snap.rows:
        return None
    return (snap.estimate - snap.rows) / snap.rate


def _overall_parts(snap: _Snapshot, *, exact: bool) -> List[str]:
    """Rows, time, rate, memory: exact numbers for logs, compact ones for bars."""
    rows = _rows_text(snap.rows, snap.estimate, exact)
    eta = _eta_s(snap)
    if exact:
        fraction = _fraction(snap.rows, snap.estimate)
        if fraction is not None:
            rows += f" ({fraction * 100:.0f}%)"
        parts = [rows]
        if snap.rate is not None:
            parts.append(f"{snap.rate:.0f} rows/s")
        if eta is not None:
            parts.append(f"eta {format_duration(eta)}")
        parts.append(_memory_text(snap, verbose=True))
        return parts
    elapsed = format_duration(snap.elapsed_s) + (f"<{format_duration(eta)}" if eta is not None else "")
    parts = [rows, elapsed]
    if snap.rate is not None:
        parts.append(f"{format_count(round(snap.rate))} rows/s")
    parts.append(_memory_text(snap, verbose=False))
    return parts


def _overall_label(snap: _Snapshot, title: str) -> str:
    if not snap.final:
        return title
    return "Finished" if snap.finished else "Stopped"


def render_lines(snap: _Snapshot, title: str, width: int, glyphs: _Glyphs,
                 show_operators: bool = True) -> List[str]:
    """The bar lines for one snapshot: the overall line, then one line per operator.

    Every line is at most ``width - 1`` characters (so the terminal never wraps it); bars
    are aligned, names are truncated first, then bars shrink, stats are kept.
    """
    budget = max(10, width - 1)
    label = _overall_label(snap, title)
    ops = snap.operators if show_operators else []
    names = [_label(op) for op in ops]
    op_fractions, op_stats = [], []
    for op in ops:
        rows, estimate = op.rows_out, op.estimated_rows_out
        fraction = _fraction(rows, estimate)
        if op.done and fraction is None:
            fraction = 1.0
        pct = "   ?%" if fraction is None else f"{fraction * 100:4.0f}%"
        text = ", ".join([_rows_text(rows, estimate, exact=False)] + _op_stats(op, glyphs, compact=True))
        op_fractions.append(fraction)
        op_stats.append(f"{pct} {text}")

    overall_fraction = _fraction(snap.rows, snap.estimate)
    if snap.final and snap.finished:
        overall_fraction = 1.0
    overall_pct = "   ?%" if overall_fraction is None else f"{overall_fraction * 100:4.0f}%"
    overall_stats = f"{overall_pct} " + ", ".join(_overall_parts(snap, exact=False))

    # Column layout: "<label padded to name_w> <bar> <stats>", operator labels "- name".
    # The operators' stats are kept whole: the bar shrinks to 10 cells first (also to make
    # room for the overall line's stats), then names to 12 characters, then the bar goes.
    # The overall line's stats are ordered by importance (rows, time, rate, memory) and
    # what still does not fit is cut at the end.
    name_w = max([len(label)] + [len(n) + 2 for n in names])
    stats_w = max(len(s) for s in op_stats) if op_stats else len(overall_stats)
    bar_w = 25
    overflow = name_w + 1 + (bar_w + 2) + 1 + max(stats_w, len(overall_stats)) - budget
    if overflow > 0:
        bar_w -= min(overflow, bar_w - 10)
    overflow = name_w + 1 + (bar_w + 2) + 1 + stats_w - budget
    if overflow > 0:
        cut = min(overflow, max(0, name_w - max(12, len(label))))
        name_w -= cut
        overflow -= cut
    if overflow > 0:
        bar_w = 0
    bar_cells = bar_w + 2 if bar_w > 0 else 0

    def line(name: str, fraction, stats: str) -> str:
        head = glyphs.truncate(name, name_w).ljust(name_w)
        parts = [head]
        if bar_cells:
            parts.append(glyphs.bar(fraction, bar_w))
        parts.append(stats)
        return glyphs.truncate(" ".join(parts), budget)

    lines = [line(label, overall_fraction, overall_stats)]
    for name, fraction, stats in zip(names, op_fractions, op_stats):
        lines.append(line("- " + name, fraction, stats))
    return lines


def render_log_line(snap: _Snapshot, title: str, show_operators: bool = True) -> str:
    """One log line: the overall progress, then each operator's, separated by ``|``.

    E.g. ``Running 0:00:12: 45000/100000 rows (45%), 3750 rows/s, mem peak 3.1 MiB/7.1 GiB |
    ReadParquet->MapBatches(f): 120000/1000000 rows, 2 tasks running, 3.1 MiB queued``.
    """
    label = _overall_label(snap, title)
    head = f"{label} {format_duration(snap.elapsed_s)}: " + ", ".join(_overall_parts(snap, exact=True))
    segments = [head]
    if show_operators:
        glyphs = _Glyphs(unicode=False)
        for op in snap.operators:
            text = ", ".join([_rows_text(op.rows_out, op.estimated_rows_out, exact=True)] + _op_stats(op, glyphs, compact=False))
            segments.append(f"{_label(op)}: {text}")
    return " | ".join(segments)


# ---- the terminal ------------------------------------------------------------------------

_UP = "\x1b[A"
_CLEAR_LINE = "\x1b[2K"
_CLEAR_TO_END = "\x1b[K"
#: After a program's line, bars are redrawn at once unless they were drawn this recently.
_USER_REDRAW_S = 0.05


class _StreamProxy:
    """Stands in for sys.stdout / sys.stderr while bars are on screen."""

    def __init__(self, original, terminal: "_Terminal"):
        self._original = original
        self._terminal = terminal
        self._attached = True

    def write(self, text):
        if not self._attached:
            return self._original.write(text)
        return self._terminal.user_write(self._original, text)

    def writelines(self, lines):
        for text in lines:
            self.write(text)

    def flush(self):
        return self._original.flush()

    def isatty(self):
        return self._original.isatty()

    def __getattr__(self, name):
        return getattr(self._original, name)


def _unwrap(stream):
    while isinstance(stream, _StreamProxy):
        stream = stream._original
    return stream


class _Terminal:
    """The bar block of every reporter that is showing bars (one process-wide)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.stream = None
        self.entries: dict = {}  # reporter -> its current lines (insertion ordered)
        self.drawn = 0  # bar lines on screen; the cursor is at the end of the last one
        self.mid_line = False  # the program's output left the cursor inside a line
        self.last_draw = 0.0
        self.proxies: list = []  # (name in sys, proxy)
        self.handlers: list = []  # (handler, original stream, proxy)
        self.atexit_registered = False

    # -- called with the lock held ---------------------------------------------------

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            pass

    def _clear(self) -> None:
        if self.drawn:
            self._write("\r" + _CLEAR_LINE + (_UP + _CLEAR_LINE) * (self.drawn - 1))
            self.drawn = 0

    def _lines(self) -> List[str]:
        return [line for lines in self.entries.values() for line in lines]

    def _draw(self) -> None:
        lines = self._lines()
        if self.mid_line or not lines:
            if not lines:
                self._clear()
            return
        if self.drawn > len(lines):
            self._clear()
        out = []
        if self.drawn:
            out.append("\r" + (f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else ""))
        out.append("\n".join(line + _CLEAR_TO_END for line in lines))
        self._write("".join(out))
        self.drawn = len(lines)
        self.last_draw = time.monotonic()

    def _install(self) -> None:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, _StreamProxy) or current is None:
                continue
            try:
                ours = _unwrap(current) is self.stream or current.isatty()
            except Exception:
                ours = False
            if ours:
                proxy = _StreamProxy(current, self)
                setattr(sys, name, proxy)
                self.proxies.append((name, proxy))
        # Logging handlers made before the bars hold the original streams: point them at the
        # proxies too (plain attribute swaps: no handler lock is taken while ours is held).
        originals = {id(proxy._original): proxy for _, proxy in self.proxies}
        if originals:
            loggers = [logging.getLogger()] + [
                lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
            for lg in loggers:
                for handler in list(getattr(lg, "handlers", ())):
                    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                        continue
                    proxy = originals.get(id(getattr(handler, "stream", None)))
                    if proxy is not None:
                        try:
                            handler.stream = proxy
                        except Exception:
                            continue
                        self.handlers.append((handler, proxy._original, proxy))
        if not self.atexit_registered:
            atexit.register(self.shutdown)
            self.atexit_registered = True

    def _uninstall(self) -> None:
        for handler, original, proxy in self.handlers:
            if getattr(handler, "stream", None) is proxy:
                try:
                    handler.stream = original
                except Exception:
                    pass
            proxy._attached = False
        for name, proxy in self.proxies:
            if getattr(sys, name) is proxy:
                setattr(sys, name, proxy._original)
            # Someone stacked their own stream on top of ours: leave it, pass writes through.
            proxy._attached = False
        self.proxies, self.handlers = [], []

    # -- public (each takes the lock) --------------------------------------------------

    def user_write(self, original, text):
        with self.lock:
            if not self.entries:
                return original.write(text)
            self._clear()
            result = original.write(text)
            if text:
                self.mid_line = not str(text).endswith("\n")
            if not self.mid_line:
                try:
                    original.flush()
                except Exception:
                    pass
                # A burst of prints redraws the bars at most every _USER_REDRAW_S; in between
                # the reporter's next tick puts them back.
                if time.monotonic() - self.last_draw >= _USER_REDRAW_S:
                    self._draw()
            return result

    def show(self, reporter, lines: List[str]) -> bool:
        """Adds or updates ``reporter``'s lines and redraws; False if it may not show."""
        with self.lock:
            if reporter.closed:
                return False
            if not self.entries:
                self.stream = reporter.stream
                self.mid_line = False
                self.drawn = 0
                self.entries[reporter] = lines
                self._install()
            elif self.entries.get(reporter) == lines and self.drawn:
                return True
            self.entries[reporter] = lines
            self._draw()
            return True

    def finish(self, reporter, final_lines: Optional[List[str]]) -> None:
        """Removes ``reporter``, leaving ``final_lines`` on screen above the other bars."""
        with self.lock:
            if reporter not in self.entries:
                return
            try:
                self._clear()
                del self.entries[reporter]
                if final_lines and not self.mid_line:
                    self._write("\n".join(final_lines) + "\n")
                self._draw()
            finally:
                self.entries.pop(reporter, None)
                if not self.entries:
                    self._uninstall()
                    self.stream = None

    def shutdown(self) -> None:
        """At interpreter exit: leave the cursor on a fresh line, give the streams back."""
        with self.lock:
            if self.entries:
                if self.drawn:
                    self._write("\n")
                    self.drawn = 0
                self.entries.clear()
                self._uninstall()


_terminal = _Terminal()


def _reset_after_fork() -> None:
    """A forked child has no progress threads: it gets its plain streams back, and never
    clears or redraws the parent's bars."""
    terminal = _terminal
    terminal.lock = threading.RLock()
    terminal.entries.clear()
    terminal.drawn = 0
    terminal.mid_line = False
    terminal._uninstall()
    terminal.stream = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _terminal_width(stream) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except Exception:
        columns = shutil.get_terminal_size((80, 24)).columns
    return columns if columns > 0 else 80


# ---- the reporter ------------------------------------------------------------------------


class ProgressReporter:
    """Shows the progress of one execution while it runs (see DataContext's
    ``enable_progress_bars``, ``enable_operator_progress_bars``, ``progress_bar_log_interval``).

    ``stats_fn()`` returns the execution's counters so far (a ``_core.ExecutionStats``); it is
    polled from a background (daemon) thread between ``start()`` and ``stop()``; ``stop()``
    joins that thread before it returns, so ``stats_fn`` is never called afterwards.

    Keyword-only arguments exist for tests and embedders: ``stream`` (where bars or
    fallback log lines go; default ``sys.stderr`` at ``start()``), ``show_after`` (seconds
    of silence first), ``refresh_interval`` (seconds between redraws), ``width`` (terminal
    columns; default: asked from the terminal at every redraw), ``log_interval`` (overrides
    the context's ``progress_bar_log_interval``).
    """

    def __init__(self, stats_fn: Callable, context, title: str = "Running", *, stream=None,
                 show_after: float = SHOW_AFTER_S, refresh_interval: float = REFRESH_S,
                 width: Optional[int] = None, log_interval: Optional[float] = None):
        self._stats_fn = stats_fn
        self._context = context
        self._title = title
        self._stream_arg = stream
        self._show_after = max(0.0, float(show_after))
        self._refresh = max(0.01, float(refresh_interval))
        self._width = width
        self._log_interval_arg = log_interval
        self.stream = None
        self.closed = False
        self._thread: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._started_at = None
        self._mode = None  # None (off), "bars" or "log"
        self._shown = False  # bars drawn or a line logged
        self._last: Optional[_Snapshot] = None
        self._samples: deque = deque()
        self._glyphs = None
        self._failed = False
        self._errors = 0

    # -- configuration ------------------------------------------------------------------

    def _setting(self, name, default):
        try:
            return getattr(self._context, name)
        except Exception:
            return default

    @property
    def _show_operators(self) -> bool:
        """Per-operator lines: off with ``enable_operator_progress_bars=False`` or (as in
        Ray) ``execution_options.verbose_progress=False``."""
        if not self._setting("enable_operator_progress_bars", True):
            return False
        options = self._setting("execution_options", None)
        return bool(getattr(options, "verbose_progress", True))

    @property
    def _log_interval(self) -> float:
        value = self._log_interval_arg
        if value is None:
            value = self._setting("progress_bar_log_interval", 5)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = 5.0
        return max(0.05, value)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "ProgressReporter":
        if self._thread is not None or self.closed:
            return self
        try:
            if not self._setting("enable_progress_bars", True):
                return self
            stream = _unwrap(self._stream_arg if self._stream_arg is not None else sys.stderr)
            if stream is None:
                return self
            self.stream = stream
            try:
                tty = bool(stream.isatty())
            except Exception:
                tty = False
            self._mode = "bars" if tty else "log"
            self._glyphs = _Glyphs(_supports_unicode(stream))
            self._started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="millstream-progress", daemon=True)
            self._thread.start()
        except Exception:
            self._thread = None
            self._mode = None
        return self

    def stop(self) -> None:
        """Stops the thread, shows the final state (only if anything was shown), and puts
        back the streams. Idempotent; never raises (a KeyboardInterrupt received while
        waiting for the thread is re-raised once everything is restored)."""
        if self.closed:
            return
        interrupted = None
        try:
            with _terminal.lock:
                self.closed = True  # from now on the thread cannot (re)draw
            self._stop_event.set()
            thread = self._thread
            if thread is threading.current_thread():  # stopped by a finalizer on our own thread
                thread = None
            while thread is not None and thread.is_alive():
                try:
                    thread.join()
                except KeyboardInterrupt as e:  # finish restoring first
                    interrupted = e
        finally:
            try:
                self._finish()
            except Exception:
                pass
            finally:
                if self._mode == "bars":
                    try:
                        _terminal.finish(self, None)
                    except Exception:
                        pass
        if interrupted is not None:
            raise interrupted

    def _finish(self) -> None:
        if not self._shown:
            return
        snap = self._snapshot(final=True)
        if (snap is None or not snap.operators) and self._last is not None:
            # The execution was already torn down (e.g. by an interrupt): its last counters.
            last = self._last
            snap = _Snapshot(last.stats, None, last.elapsed_s, last.rate, True)
        if snap is None or not snap.operators:
            return
        if self._mode == "bars":
            lines = render_lines(snap, self._title, self._columns(), self._glyphs, self._show_operators)
            _terminal.finish(self, lines)
        elif self._mode == "log":
            self._emit_log(render_log_line(snap, self._title, self._show_operators))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- the background thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._mode == "bars":
                if self._stop_event.wait(self._show_after):
                    return
                while not self._failed:
                    self._tick_bars()
                    if self._stop_event.wait(self._refresh):
                        return
            else:
                delay = max(self._show_after, self._log_interval)
                while not self._failed and not self._stop_event.wait(delay):
                    self._tick_log()
                    delay = self._log_interval
        except BaseException:  # never raise into the program, whatever happens
            self._failed = True

    def _tick_bars(self) -> None:
        snap = self._snapshot(final=False)
        if snap is None or not snap.operators:
            return
        lines = render_lines(snap, self._title, self._columns(), self._glyphs, self._show_operators)
        if _terminal.show(self, lines):
            self._shown = True

    def _tick_log(self) -> None:
        snap = self._snapshot(final=False)
        if snap is None or not snap.operators or self.closed:
            return
        self._emit_log(render_log_line(snap, self._title, self._show_operators))
        self._shown = True

    def _emit_log(self, line: str) -> None:
        try:
            if logger.hasHandlers():
                logger.info("%s", line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()
        except Exception:
            pass

    def _columns(self) -> int:
        return int(self._width) if self._width else _terminal_width(self.stream)

    def _snapshot(self, final: bool) -> Optional[_Snapshot]:
        """Reads the counters; None when they cannot be read (three failures stop the thread)."""
        try:
            stats = self._stats_fn()  # a _core.ExecutionStats
            operators = list(stats.operators)
            held = stats.held_bytes
            elapsed = stats.wall_s
        except Exception:
            if not final:
                self._errors += 1
                self._failed = self._errors >= 3
            return None
        now = time.monotonic()
        if elapsed <= 0:
            elapsed = now - (self._started_at or now)
        rows = operators[-1].rows_out if operators else 0
        rate = None
        if final:
            if elapsed > 0:
                rate = rows / elapsed
        else:
            self._samples.append((elapsed, rows))
            while len(self._samples) > 2 and elapsed - self._samples[1][0] >= _RATE_WINDOW_S:
                self._samples.popleft()
            t0, r0 = self._samples[0]
            if elapsed - t0 >= 0.5:
                rate = (rows - r0) / (elapsed - t0)
            elif elapsed > 0:
                rate = rows / elapsed
        snap = _Snapshot(stats, held, elapsed, rate, final)
        if snap.operators:
            self._last = snap
        return snap
