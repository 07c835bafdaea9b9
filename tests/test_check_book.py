"""The browser check must be able to fail: a page with a script error, raw TeX and a broken image."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_book.py"
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")

BAD_PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body><main>
<p>Raw math: $$ p(x) = \\int p(x|z) p(z) dz $$</p>
<table><tr><td>$\\log q_\\phi(z_{ik}</td><td>x_i)$</td></tr></table>
<p><mjx-merror data-mjx-error="Undefined control sequence \\opname">\\opname</mjx-merror></p>
<img src="missing.png" alt="gone">
<script>undefinedFunction();</script>
</main></body></html>"""

GOOD_PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body><main>
<p>No mathematics here, and a picture that loads:</p>
<img src="pixel.png" alt="a pixel">
<pre>$$ code is left alone $$</pre>
</main></body></html>"""

# A 1x1 PNG.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def load_checker():
    spec = importlib.util.spec_from_file_location("check_book", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_book_flags_script_errors_raw_math_and_broken_images(tmp_path):
    (tmp_path / "index.html").write_text(BAD_PAGE)
    (tmp_path / "good.html").write_text(GOOD_PAGE)
    (tmp_path / "pixel.png").write_bytes(PIXEL)
    check_book = load_checker()
    assert check_book.main([str(tmp_path), "--chromium", CHROMIUM]) == 1

    server, base = check_book.serve(tmp_path)
    try:
        with check_book.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=check_book.CHROMIUM_FLAGS)
            bad, _ = check_book.check_page(browser, f"{base}/index.html", tmp_path / "bad.png", None)
            good, stats = check_book.check_page(browser, f"{base}/good.html", None, None)
            browser.close()
    finally:
        server.shutdown()
    report = "\n".join(bad)
    assert "undefinedFunction is not defined" in report
    assert "math not typeset" in report and "p(x)" in report
    assert "math not typeset: '$\\\\log q_\\\\phi(z_{ik}'" in report  # inline TeX that a table's | split open
    assert "math error: 'Undefined control sequence \\\\opname'" in report
    assert "image not loaded: missing.png" in report
    assert "HTTP 404" in report
    assert (tmp_path / "bad.png").stat().st_size > 0
    assert good == [] and stats["images"] == 1
