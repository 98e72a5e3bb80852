"""docs/tutorial.md runs exactly as written: its ```bash blocks, in order, as one shell script.

Why one script: the guide is read top to bottom in one terminal (``cd`` and ``export`` carry over,
the server started in the background is job ``%1``). The only thing the test chooses is ``$PORT``
(a free port; the guide defaults to 8000). The script runs in its own process group, which is
killed at the end, so a failing step never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```bash\n(.*?)^```\s*$", re.S | re.M)


def tutorial_blocks() -> list[str]:
    """The shell blocks of the guide, in order (other fences, e.g. ```text output, are not run)."""
    return BLOCK.findall(TUTORIAL.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_blocks_are_found() -> None:
    blocks = tutorial_blocks()
    joined = "\n".join(blocks)
    for step in (
        "modalrec validate",
        "modalrec encode",
        "modalrec fit",
        "modalrec report",
        "modalrec serve",
        "curl",
        "modalrec serve-key",
        '"http://127.0.0.1:$PORT/items" -H "Authorization: Bearer $KEY"',
        "curl -s -X DELETE",
        "modalrec add-items",
    ):
        assert step in joined, step
    # every fenced block is either run (bash) or shown (text/toml): no silently skipped shell
    fences = re.findall(r"^```(\w*)\s*$", TUTORIAL.read_text(encoding="utf-8"), re.M)
    assert set(fences[0::2]) <= {"bash", "text", "toml"}, fences


@pytest.mark.skipif(shutil.which("curl") is None, reason="the tutorial queries the server with curl")
def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    # a failing step ends the script; the trap then stops a server it left running (which would
    # otherwise hold the output pipe open until the timeout)
    prefix = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    script = prefix + "\n".join(tutorial_blocks())
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,  # the answers of curl (and what the commands print)
        stderr=subprocess.PIPE,  # the server's log, progress lines
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=1800)  # a safety net: minutes on a busy machine
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, out[-4000:] + err[-4000:]
    work = tmp_path / "tutorial"
    # what the guide promises at each step
    assert json.loads((work / "validation.json").read_text())["stats"]["dataset"]["items"] == 120
    assert (work / "runs" / "shop" / "manifest.json").is_file()
    page = (work / "reports" / "shop" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "<link" not in page
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # the one error is the broken picture of step 9, refused with its reason
    errors = [a["error"] for a in answers if "error" in a]
    assert [(e["status"], e["code"]) for e in errors] == [(422, "corrupt_image")], answers
    recs = [a for a in answers if a.get("user_id") == "u0007"]
    assert recs and len(recs[0]["items"]) == 3 and recs[0]["source"] == "model", answers
    new = [a for a in answers if a.get("user_id") == "a-new-visitor"]
    assert new and new[0]["fallback"] is True
    similar = [a for a in answers if a.get("modality") == "image"]
    assert similar and len(similar[0]["items"]) == 3
    search = [a for a in answers if a.get("query") == "oak chair"]
    assert search and any("oak" in i["title"].lower() for i in search[0]["items"])
    check_new_items(work, answers)


def check_new_items(work: Path, answers: list[dict]) -> None:
    """Step 9: an item added live is similar and searchable at once, hidden by DELETE; the broken
    upload stored nothing; add-items wrote a new run with both new items."""
    import sqlite3

    import polars as pl

    added = [a for a in answers if a.get("created") is True]
    assert [a["item_id"] for a in added] == ["p00120"], answers
    assert added[0]["modalities"] == ["audio", "image", "text"] and added[0]["missing"] == {}
    similar = [a for a in answers if a.get("item_id") == "p00120" and a.get("modality") == "fused"]
    assert similar and len(similar[0]["items"]) == 3
    assert "p00120" not in {i["item_id"] for i in similar[0]["items"]}
    wool = [a for a in answers if a.get("query") == "wool chair"]
    assert len(wool) == 2 and wool[0]["items"][0]["item_id"] == "p00120", wool  # found, then hidden
    assert "p00120" not in {i["item_id"] for i in wool[1]["items"]}
    assert {"item_id": "p00120", "deleted": True} in answers
    with sqlite3.connect(work / "serve-state" / "live_items.sqlite") as con:
        ops = con.execute("SELECT item_id, op FROM live_items ORDER BY seq").fetchall()
    assert ops == [("p00120", "add"), ("p00120", "delete")], ops  # nothing of the refused p00121
    items = pl.read_parquet(work / "runs" / "shop-live-2" / "items.parquet")
    assert items.height == 122 and set(items["item_id"].to_list()[-2:]) == {"p00121", "p00122"}
    assert (work / "runs" / "shop-live" / "items.parquet").is_file()  # the served run is unchanged
    assert pl.read_parquet(work / "runs" / "shop-live" / "items.parquet").height == 120
