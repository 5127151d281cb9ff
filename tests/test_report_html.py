"""``<out>/report.html`` opens offline in a real browser and shows the backtest.

The E-mini replay's page is loaded by headless Chromium with every host name unresolvable (no
network), screenshotted and its DOM dumped after the scripts ran: the page references no
external resource, logs nothing to the console (no errors, no failed loads), draws both
plotly figures with every trace, and the screenshot is a picture, not a blank page. Chromium
comes from the system (``.ci/run`` installs it); this test is never skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._replay_fixture import ReplayPool, pool_fixture

replays = pool_fixture()
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("no headless Chromium: apt-get install chromium (.ci/run does)")


def _browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={page.parent / '.chromium'}", OFFLINE,
           "--virtual-time-budget=15000", "--enable-logging=stderr", "--v=0", *args,
           page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False,
                          cwd=page.parent)


@pytest.fixture(scope="module")
def page(replays: ReplayPool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the base replay's page in a directory of its own (the browser's profile
    goes beside it)."""
    src = replays.get("base").out / "report.html"
    dest = tmp_path_factory.mktemp("page") / "report.html"
    shutil.copy(src, dest)
    return dest


def test_the_page_is_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", text)
    external = [t for t in tags if re.search(r"\b(?:src|href)\s*=", t)]
    assert external == []
    assert "plotly" in text.lower() and len(text) > 1_000_000  # the library itself, inline


def test_the_page_carries_the_runs_summary(page: Path, replays: ReplayPool) -> None:
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="summary-json">(.*?)</script>', text,
                  re.DOTALL)
    assert m is not None
    embedded = json.loads(m.group(1))
    summary = replays.get("base").summary
    for key in ("pnl", "costs", "round_trips", "per_bar", "sharpe", "rejects_by_code"):
        assert embedded[key] == summary[key]


def test_chromium_renders_every_chart_without_console_messages(page: Path) -> None:
    r = _browse(page, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == []
    dom = r.stdout
    assert dom.count('class="main-svg"') >= 4  # two plotly figures, each drawn
    for title in ("equity (USD)", "drawdown", "position (contracts)", "price and fills",
                  "regime probabilities", "costs (USD)"):
        assert title in dom
    for trace in ("buy fills", "sell fills", "P(bull)", "P(bear)", "P(sideways)", "bar close"):
        assert trace in dom
    assert "CONCENTRATION_LIMIT" in dom  # the summary table


def test_the_screenshot_is_a_picture_not_a_blank_page(page: Path) -> None:
    shot = page.parent / "report.png"
    r = _browse(page, "--window-size=1400,2200", f"--screenshot={shot}")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln] == []
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape == (2200, 1400, 3)
    ink = (np.abs(img - 255).sum(axis=2) > 60).mean()  # pixels clearly not white
    assert 0.03 < ink < 0.6
    colors = {tuple(c) for c in img[::4, ::4].reshape(-1, 3).tolist()}
    assert len(colors) > 200  # lines, fills, markers and text in many shades
    # the charts reach down the page: the lower half has ink too
    assert (np.abs(img[1100:] - 255).sum(axis=2) > 60).mean() > 0.02
