"""A real headless browser (Chromium from the distribution) looks at a report page.

``page_metrics(page)`` loads the page beside its figures and reports what a reader would
see go wrong: images that did not load, a page wider than the window, tables wider than
their box.  Tests skip where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 900
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]

_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {
    viewport: window.innerWidth,
    page_width: document.documentElement.scrollWidth,
    images: imgs.length,
    broken_images: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                       .map(i => i.getAttribute('src')),
    images_past_edge: imgs.filter(i => i.getBoundingClientRect().right > window.innerWidth + 1)
                          .map(i => i.getAttribute('src')),
    tables: document.querySelectorAll('table').length,
    tables_wider_than_box: [...document.querySelectorAll('div.table')]
                               .filter(d => d.scrollWidth > d.clientWidth + 1).length,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (/usr/bin/chromium; apt-get install chromium)")


def _run(args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180)
    return proc.stdout


def page_metrics(page: Path) -> dict[str, object]:
    """Load ``page`` (its figures beside it) and measure it at 1280 x 900."""
    require_chromium()
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    try:
        dom = _run(["--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()])
    finally:
        probe.unlink()
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert found, f"the probe did not run in Chromium: {dom[-500:]!r}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(page: Path, png: Path, height: int = 3000) -> Path:
    """A PNG of the page as Chromium draws it (for a person to look at)."""
    require_chromium()
    _run([f"--window-size={WIDTH},{height}", f"--screenshot={png}", page.resolve().as_uri()])
    return png
