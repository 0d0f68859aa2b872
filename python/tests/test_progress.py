"""Progress reporting: bars on a (fake) terminal, log lines elsewhere, user output intact.

The renderer is driven by a fake ``stats_fn`` whose snapshots the test controls, and draws
on a fake terminal (a StringIO that says it is a tty); ``Screen`` replays what was written
the way a terminal would (carriage return, cursor up, clear line) to check what is visible.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import time

import pytest

import millstream as md
from millstream import progress
from millstream import _core
from millstream.progress import ProgressReporter

WIDTH = 120


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakePipe(io.StringIO):
    def isatty(self):
        return False


_ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


class Screen:
    """Replays text written to a terminal: what is on screen afterwards, line by line."""

    def __init__(self, text: str, width: int = WIDTH):
        self.rows = [""]
        self.row, self.col = 0, 0
        i = 0
        while i < len(text):
            ch = text[i]
            match = _ESCAPE.match(text, i)
            if match:
                n, code = int(match.group(1) or 1), match.group(2)
                if code == "A":
                    self.row = max(0, self.row - n)
                elif code == "K":  # 2K: whole line, K: to the end
                    line = self.rows[self.row]
                    self.rows[self.row] = "" if match.group(1) == "2" else line[:self.col]
                else:
                    raise AssertionError(f"unexpected escape sequence {match.group(0)!r}")
                i = match.end()
                continue
            if ch == "\x1b":
                raise AssertionError(f"malformed escape sequence at {text[i:i + 8]!r}")
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self.col = 0
                if self.row == len(self.rows):
                    self.rows.append("")
            else:
                line = self.rows[self.row].ljust(self.col)
                self.rows[self.row] = line[:self.col] + ch + line[self.col + 1:]
                self.col += 1
                assert self.col <= width, f"line wider than the terminal: {self.rows[self.row]!r}"
            i += 1

    @property
    def lines(self):
        rows = [r.rstrip() for r in self.rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def op(name, rows_out, estimate=-1, *, active=0, queued_bundles=0, queued_bytes=0, actors=0,
       done=False):
    return dict(
        name=name, tasks=1, blocks_in=0, rows_in=rows_out, bytes_in=0,
        blocks_out=1, rows_out=rows_out, bytes_out=8 * rows_out, task_wall_s=0.1,
        backpressure_s=0.0, peak_bytes=0, cpu_s=0.1, udf_s=0.1,
        active_tasks=active, queued_bundles=queued_bundles, queued_bytes=queued_bytes,
        actors=actors, peak_actors=actors, actors_started=actors,
        estimated_rows_out=estimate, done=done,
    )


class FakeStats:
    """A stats_fn whose snapshot the test sets; counts its calls."""

    def __init__(self, operators=None, finished=False, wall_s=2.0):
        self.lock = threading.Lock()
        self.calls = 0
        self.set(operators if operators is not None else [
            op("TaskPoolMapOperator[ReadParquet->MapBatches(f)]", 120000, 1000000,
               active=2, queued_bundles=5, queued_bytes=int(3.1 * 2**20)),
            op("ActorPoolMapOperator[MapBatches(Model)] (actors 1..4)", 50000, 1000000,
               active=3, actors=3),
        ], finished=finished, wall_s=wall_s)

    def set(self, operators, finished=False, wall_s=2.0):
        with self.lock:
            self.operators = operators
            self.totals = {"wall_s": wall_s, "peak_bytes": 5 * 2**20,
                           "memory_limit": 8 * 2**30, "finished": finished}

    def __call__(self):
        with self.lock:
            self.calls += 1
            # The engine's typed counters, as a running execution's stats() returns them.
            return _core.ExecutionStats(operators=[_core.OperatorStats(**o) for o in self.operators],
                                        **self.totals)


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def reporter(stats, ctx, stream, **kwargs):
    kwargs.setdefault("show_after", 0.0)
    kwargs.setdefault("refresh_interval", 0.02)
    kwargs.setdefault("width", WIDTH)
    return ProgressReporter(stats, ctx, stream=stream, **kwargs)


@contextlib.contextmanager
def console():
    """A fake terminal that stdout and stderr both write to, as on a real console.

    (Swapped in the test's body: pytest's capture resets sys.stdout between phases.)
    """
    term = FakeTTY()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = term
    try:
        yield term
    finally:
        sys.stdout, sys.stderr = saved


# ---- formatting ------------------------------------------------------------------------


def test_names_counts_and_bytes():
    assert progress.display_name("TaskPoolMapOperator[ReadRange->MapBatches(f)]") == "ReadRange->MapBatches(f)"
    assert progress.display_name("ActorPoolMapOperator[MapBatches(M)] (actors 1..4)") == "MapBatches(M)"
    assert progress.display_name("LimitOperator[10]") == "Limit[10]"
    assert progress.display_name("Custom") == "Custom"
    assert [progress.format_count(n) for n in (0, 9999, 45_000, 100_000, 999_999, 12_345_678)] == \
        ["0", "9999", "45.0k", "100k", "1.0M", "12.3M"]
    assert [progress.format_bytes(n) for n in (0, 800, 2048, int(3.1 * 2**20), 7 * 2**30)] == \
        ["0 B", "800 B", "2.0 KiB", "3.1 MiB", "7.0 GiB"]
    assert progress.format_duration(3725) == "1:02:05" and progress.format_duration(65) == "01:05"


def test_lines_fit_narrow_terminals():
    stats = FakeStats()
    snap = progress._Snapshot(stats(), 1024, 2.0, 100.0, False)
    for width in (30, 60, 80, 200):
        for glyphs in (progress._Glyphs(True), progress._Glyphs(False)):
            lines = progress.render_lines(snap, "Running", width, glyphs)
            assert len(lines) == 3
            assert all(len(line) <= width - 1 for line in lines), (width, lines)
    wide = progress.render_lines(snap, "Running", 200, progress._Glyphs(False))
    assert "ReadParquet->MapBatches(f)" in wide[1] and "[" in wide[1]  # whole name and a bar
    narrow = progress.render_lines(snap, "Running", 60, progress._Glyphs(False))
    assert "12%" in narrow[1] and "~" in narrow[1]  # stats kept, name truncated


# ---- terminal --------------------------------------------------------------------------


def test_short_run_shows_nothing(ctx):
    with console() as tty:
        stats = FakeStats()
        with ProgressReporter(stats, ctx, stream=tty, width=WIDTH):  # default: ~1 s of silence
            time.sleep(0.1)
        assert tty.getvalue() == ""
        assert sys.stdout is tty and sys.stderr is tty


def test_operator_and_overall_lines(ctx):
    with console() as tty:
        stats = FakeStats()
        rep = reporter(stats, ctx, tty).start()
        try:
            assert wait_for(lambda: "Running" in tty.getvalue())
            assert isinstance(sys.stdout, progress._StreamProxy)  # bars on screen: proxied
            live = Screen(tty.getvalue()).lines
        finally:
            stats.set([op("TaskPoolMapOperator[ReadParquet->MapBatches(f)]", 1000000, 1000000, done=True),
                       op("ActorPoolMapOperator[MapBatches(Model)] (actors 1..4)", 1000000, 1000000,
                          actors=0, done=True)], finished=True, wall_s=10.0)
            rep.stop()
        assert sys.stdout is tty and sys.stderr is tty

        assert len(live) == 3, live
        overall, read, model = live
        assert overall.startswith("Running")
        assert "50.0k/1.0M rows" in overall and "5%" in overall  # last operator's rows / estimate
        assert "rows/s" in overall and "mem " in overall and "8.0 GiB" in overall
        assert read.startswith("- ReadParquet->MapBatches(f)")
        assert "120k/1.0M rows" in read and "12%" in read
        assert "2 running" in read and "3.1 MiB queued" in read
        assert model.startswith("- MapBatches(Model)")
        assert "3 running" in model and "3 actors" in model and "5%" in model
        # Bars are aligned: every bar starts in the same column.
        columns = {line.index("▕") for line in live}
        assert len(columns) == 1

        final = Screen(tty.getvalue()).lines
        assert len(final) == 3 and tty.getvalue().endswith("\n")  # left on screen
        assert final[0].startswith("Finished") and "1.0M/1.0M rows" in final[0] and "100%" in final[0]
        assert "✔" in final[1] and "✔" in final[2] and "running" not in final[1]


@pytest.mark.parametrize("knob", ["enable_operator_progress_bars", "verbose_progress"])
def test_operator_bars_disabled_shows_only_overall_line(ctx, knob):
    with console() as tty:
        if knob == "verbose_progress":
            ctx.execution_options.verbose_progress = False
        else:
            ctx.enable_operator_progress_bars = False
        stats = FakeStats()
        rep = reporter(stats, ctx, tty).start()
        try:
            assert wait_for(lambda: "Running" in tty.getvalue())
            time.sleep(0.05)
        finally:
            rep.stop()
        lines = Screen(tty.getvalue()).lines
        assert len(lines) == 1 and lines[0].startswith("Stopped")  # not finished: stopped early
        assert "ReadParquet" not in tty.getvalue()


def test_progress_disabled_shows_nothing(ctx):
    with console() as tty:
        ctx.enable_progress_bars = False
        stats = FakeStats()
        rep = reporter(stats, ctx, tty).start()
        time.sleep(0.1)
        rep.stop()
        assert tty.getvalue() == "" and stats.calls == 0
        assert rep._thread is None
        assert sys.stdout is tty and sys.stderr is tty


def test_user_print_is_not_garbled(ctx):
    with console() as tty:
        stats = FakeStats()
        rep = reporter(stats, ctx, tty).start()
        try:
            assert wait_for(lambda: "Running" in tty.getvalue())
            print("hello from the user", 42)
            print("part one,", end="")
            time.sleep(0.1)  # redraws must wait while the user's line is unfinished
            print(" part two")
            sys.stderr.write("an error line\n")
            print("a warning", file=sys.stderr, flush=True)
            assert wait_for(lambda: Screen(tty.getvalue()).lines[-3].startswith("Running"))
            screen = Screen(tty.getvalue()).lines
        finally:
            rep.stop()
        # The user's lines come first, each whole; the bars sit below them.
        assert screen[:4] == ["hello from the user 42", "part one, part two", "an error line", "a warning"]
        assert screen[4].startswith("Running") and screen[5].startswith("- ReadParquet")
        assert len(screen) == 7
        after = Screen(tty.getvalue()).lines
        assert after[:4] == screen[:4] and after[4].startswith("Stopped") and len(after) == 7


def test_prints_from_other_threads(ctx):
    with console() as tty:
        stats = FakeStats()
        rep = reporter(stats, ctx, tty, refresh_interval=0.005).start()
        try:
            assert wait_for(lambda: "Running" in tty.getvalue())

            def chatter(k):
                for i in range(50):
                    print(f"thread {k} line {i}")

            threads = [threading.Thread(target=chatter, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            rep.stop()
        lines = Screen(tty.getvalue()).lines
        printed = [line for line in lines if line.startswith("thread")]
        assert sorted(printed) == sorted(f"thread {k} line {i}" for k in range(4) for i in range(50))
        assert len(lines) == 200 + 3


def test_logging_handler_streams_are_proxied(ctx):
    with console() as tty:
        handler = logging.StreamHandler(sys.stderr)  # holds the terminal itself, not sys.stderr
        handler.setFormatter(logging.Formatter("LOG %(message)s"))
        log = logging.getLogger("millstream.test.handler")
        log.addHandler(handler)
        log.propagate = False
        try:
            rep = reporter(FakeStats(), ctx, tty).start()
            try:
                assert wait_for(lambda: "Running" in tty.getvalue())
                log.warning("from a handler")
                assert isinstance(handler.stream, progress._StreamProxy)
            finally:
                rep.stop()
            assert handler.stream is tty
        finally:
            log.removeHandler(handler)
            log.propagate = True
        lines = Screen(tty.getvalue()).lines
        assert lines[0] == "LOG from a handler" and lines[1].startswith("Stopped")


def test_streams_restored_after_exception(ctx):
    with console() as tty:
        with pytest.raises(KeyboardInterrupt):
            with reporter(FakeStats(), ctx, tty):
                assert wait_for(lambda: "Running" in tty.getvalue())
                assert isinstance(sys.stdout, progress._StreamProxy)
                raise KeyboardInterrupt
        assert sys.stdout is tty and sys.stderr is tty
        assert tty.getvalue().endswith("\n")
        print("after")
        assert tty.getvalue().endswith("\nafter\n")


def test_stream_replaced_by_user_meanwhile(ctx):
    with console() as tty:
        rep = reporter(FakeStats(), ctx, tty).start()
        assert wait_for(lambda: isinstance(sys.stdout, progress._StreamProxy))
        proxy = sys.stdout
        mine = io.StringIO()
        sys.stdout = mine  # e.g. contextlib.redirect_stdout entered during the bars
        rep.stop()
        assert sys.stdout is mine and sys.stderr is tty  # not clobbered
        sys.stdout = proxy  # the redirect exits: the old proxy now only passes writes through
        print("plain")
        assert tty.getvalue().endswith("\nplain\n")


def test_stop_is_prompt_and_stats_errors_are_contained(ctx):
    with console() as tty:
        calls = []

        def broken():
            calls.append(1)
            raise RuntimeError("stats failed")

        rep = reporter(broken, ctx, tty).start()
        assert wait_for(lambda: len(calls) >= 3)
        t0 = time.monotonic()
        rep.stop()
        rep.stop()  # idempotent
        assert time.monotonic() - t0 < 0.5
        assert not rep._thread.is_alive()
        assert tty.getvalue() == ""

        stats = FakeStats()
        rep = ProgressReporter(stats, ctx, stream=tty, width=WIDTH, refresh_interval=0.2).start()
        time.sleep(0.05)
        t0 = time.monotonic()
        rep.stop()
        assert time.monotonic() - t0 < 0.5 and not rep._thread.is_alive()
        calls_after_stop = stats.calls
        time.sleep(0.05)
        assert stats.calls == calls_after_stop  # never polled after stop()


def test_final_state_when_execution_already_torn_down(ctx):
    with console() as tty:
        stats = FakeStats()
        rep = reporter(stats, ctx, tty).start()
        try:
            assert wait_for(lambda: "Running" in tty.getvalue())
        finally:
            stats.set([])  # a closed execution has no counters any more
            rep.stop()
        lines = Screen(tty.getvalue()).lines
        assert len(lines) == 3 and lines[0].startswith("Stopped") and "50.0k/1.0M rows" in lines[0]
        assert "120k/1.0M rows" in lines[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_plain_streams(ctx):
    with console() as tty:
        rep = reporter(FakeStats(), ctx, tty).start()
        try:
            assert wait_for(lambda: isinstance(sys.stdout, progress._StreamProxy))
            pid = os.fork()
            if pid == 0:  # the child: no proxies, nothing to clear
                ok = sys.stdout is tty and sys.stderr is tty and not progress._terminal.entries
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
        finally:
            rep.stop()
        assert os.waitstatus_to_exitcode(status) == 0


def test_two_reporters_share_the_screen(ctx):
    with console() as tty:
        a = reporter(FakeStats(), ctx, tty, title="First").start()
        b = reporter(FakeStats([op("LimitOperator[5]", 3, 5)]), ctx, tty, title="Second").start()
        try:
            assert wait_for(lambda: "First" in tty.getvalue() and "Second" in tty.getvalue())
            a.stop()
            print("between")
            assert isinstance(sys.stdout, progress._StreamProxy)  # b still shows
        finally:
            a.stop()
            b.stop()
        assert sys.stdout is tty and sys.stderr is tty
        lines = Screen(tty.getvalue()).lines
        assert [line.split()[0] for line in lines] == ["Stopped", "-", "-", "between", "Stopped", "-"]
        assert "Limit[5]" in lines[5]


# ---- not a terminal --------------------------------------------------------------------


def test_log_lines_at_the_interval(ctx, caplog):
    ctx.progress_bar_log_interval = 0.1
    caplog.set_level(logging.INFO, logger="millstream")
    pipe = FakePipe()
    stats = FakeStats()
    rep = reporter(stats, ctx, pipe).start()
    try:
        time.sleep(0.55)
    finally:
        stats.set([op("TaskPoolMapOperator[ReadParquet->MapBatches(f)]", 1000, 1000, done=True)],
                  finished=True)
        rep.stop()
    assert pipe.getvalue() == ""  # logging is configured: nothing written directly
    messages = [r.getMessage() for r in caplog.records if r.name == "millstream"]
    assert 3 <= len(messages) <= 7, messages
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "millstream")
    first = messages[0]
    assert first.startswith("Running 00:02: 50000/1000000 rows (5%)")
    assert ("ReadParquet->MapBatches(f): 120000/1000000 rows, 2 tasks running, 3.1 MiB queued"
            in first)
    assert "MapBatches(Model): 50000/1000000 rows, 3 tasks running, 3 actors" in first
    assert "\x1b" not in "".join(messages)
    assert messages[-1].startswith("Finished") and "1000/1000 rows (100%)" in messages[-1]
    assert "done" in messages[-1]


def test_log_lines_without_logging_go_to_stderr(ctx, monkeypatch):
    ctx.progress_bar_log_interval = 0.1
    ctx.enable_operator_progress_bars = False
    pipe = FakePipe()
    monkeypatch.setattr(logging.Logger, "hasHandlers", lambda self: False)
    rep = reporter(FakeStats(), ctx, pipe).start()
    time.sleep(0.25)
    rep.stop()
    lines = pipe.getvalue().splitlines()
    assert len(lines) >= 2 and lines[0].startswith("Running") and "ReadParquet" not in lines[0]
    assert lines[-1].startswith("Stopped")


def test_log_short_run_logs_nothing(ctx, caplog):
    caplog.set_level(logging.INFO, logger="millstream")
    ctx.progress_bar_log_interval = 0.05
    rep = ProgressReporter(FakeStats(), ctx, stream=FakePipe()).start()  # ~1 s of silence
    time.sleep(0.2)
    rep.stop()
    assert not [r for r in caplog.records if r.name == "millstream"]


# ---- end to end ------------------------------------------------------------------------


def test_pipeline_logs_progress(ctx, caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakePipe())  # not a terminal, even under `pytest -s`
    ctx.progress_bar_log_interval = 0.2
    ctx.execution_options.resource_limits.cpu = 2  # 20 blocks x 0.15 s on 2 slots: ~1.5 s
    caplog.set_level(logging.INFO, logger="millstream")

    def slow_fn(batch):
        time.sleep(0.15)
        return batch

    ds = md.range(1000, override_num_blocks=20).map_batches(slow_fn)
    t0 = time.monotonic()
    assert ds.count() == 1000
    assert time.monotonic() - t0 >= 1.3
    messages = [r.getMessage() for r in caplog.records if r.name == "millstream"]
    assert len(messages) >= 2, messages
    assert all("ReadRange->MapBatches(slow_fn):" in m for m in messages), messages
    assert " rows, 2 tasks running" in messages[0]
    assert messages[-1].startswith("Finished") and "1000/1000 rows" in messages[-1]
