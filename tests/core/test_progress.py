"""Progress outside a terminal: plain lines on stderr with the full numbers, never cut to 80 columns."""

from __future__ import annotations

import io
import subprocess
import sys

from modalrec.core.progress import PlainProgress


def test_plain_lines_keep_every_character() -> None:
    buf = io.StringIO()
    desc = "a rather long task description that alone fills most of an eighty column line"
    with PlainProgress(every=0.0, file=buf) as p:
        t = p.add_task(desc, total=1200, status="")
        for _ in range(3):
            p.update(t, advance=400, status="valid R@20 0.1234 (best 0.1234 @ 3)")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith(desc + ": 1200/1200 100% (")
    assert lines[-1].endswith("valid R@20 0.1234 (best 0.1234 @ 3)") and len(lines[-1]) > 80
    assert "400/1200 33%" in lines[0] and "ETA" in lines[0]


def test_plain_lines_are_periodic() -> None:
    buf = io.StringIO()
    with PlainProgress(every=3600.0, file=buf) as p:
        t = p.add_task("x", total=1000)
        for _ in range(999):
            p.update(t, advance=1)
        assert buf.getvalue() == ""  # not yet due, not finished
        p.update(t, advance=1)
    assert buf.getvalue().splitlines() == [buf.getvalue().splitlines()[0]]
    assert buf.getvalue().startswith("x: 1000/1000 100%")


def test_training_and_encoding_progress_in_a_pipe_are_plain_lines() -> None:
    code = (
        "from modalrec.models.training import make_progress\n"
        "from modalrec.encoders.progress import Progress\n"
        "with make_progress(True) as bar:\n"
        "    t = bar.add_task('bprmf', total=1200, status='')\n"
        "    bar.update(t, advance=1200, status='loss 0.6931  valid R@20 0.1000 (best 0.1000 @ 1200)')\n"
        "with Progress(True) as p:\n"
        "    p.task('image (efficientnet-lite0)', 1200)(1200)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith("bprmf: 1200/1200 100% (") and lines[0].endswith("(best 0.1000 @ 1200)")
    assert lines[1].startswith("image (efficientnet-lite0): 1200/1200 100% (") and "items/s" in lines[1]
