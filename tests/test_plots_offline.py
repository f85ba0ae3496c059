"""`dvc plots show` output renders with no network: the repository's plots template
(configs/plots/offline_template.html, set in .dvc/config) inlines vega, vega-lite and
vega-embed instead of loading them from a CDN.

The rendering check opens the page in headless Chromium with the network blocked and
reads the drawn DOM back; without Chromium on PATH it is skipped
(`apt-get install -y chromium`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from configobj import ConfigObj

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "configs" / "plots" / "offline_template.html"
BLACKHOLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail
OFFLINE_ENV = {"HTTP_PROXY": BLACKHOLE, "HTTPS_PROXY": BLACKHOLE, "http_proxy": BLACKHOLE,
               "https_proxy": BLACKHOLE, "NO_PROXY": "", "no_proxy": "",
               "DVC_NO_ANALYTICS": "1"}

# plot id -> (series drawn, points per series)
PLOTS = {"loss": (1, 4), "fig": (2, 3)}
DVC_YAML = """\
plots:
- loss:
    template: linear
    x: step
    y:
      dvclive/plots/metrics/train/loss.tsv: loss
- fig:
    template: linear
    x: threshold
    y:
      fig.csv: [acc_a, acc_b]
"""

# Test-only shim, inserted before </head> of a copy of the page: vega-embed draws SVG (so
# the dumped DOM shows the marks) and JS errors are recorded on <html data-js-errors>.
SVG_SHIM = """<script>
(function () {
  var root = document.documentElement;
  function note(msg) { root.dataset.jsErrors = (root.dataset.jsErrors || "") + msg + "; "; }
  window.addEventListener("error", function (e) { note(e.message); });
  window.addEventListener("unhandledrejection", function (e) { note(String(e.reason)); });
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, opt) {
    return embed(el, spec, Object.assign({}, opt, {renderer: "svg"}));
  };
})();
</script>
"""


def _repo_template_setting() -> str:
    return ConfigObj(str(ROOT / ".dvc" / "config"))["plots"]["html_template"]


def test_dvc_config_points_at_the_offline_template():
    setting = _repo_template_setting()
    assert not os.path.isabs(setting)
    # DVC resolves a relative plots.html_template against .dvc/ (dvc/commands/plots.py)
    assert (ROOT / ".dvc" / setting).resolve() == TEMPLATE


def test_template_is_built_from_the_vendored_scripts():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_plots_template.py"),
                          "--check"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    page = TEMPLATE.read_text(encoding="utf-8")
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)\s*=", page, re.IGNORECASE)


class _Charts(HTMLParser):
    """Per plot div of a dumped DOM: its marks canvases and the `d` of its line marks."""

    def __init__(self, ids):
        super().__init__()
        self.ids, self.stack, self.current = set(ids), [], None
        self.canvases = {i: [] for i in ids}
        self.lines = {i: set() for i in ids}
        self.errors = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.errors = a.get("data-js-errors", "")
        if tag == "div" and a.get("id") in self.ids and self.current is None:
            self.current = a["id"]
            self.stack = [tag]
            return
        if self.current is None:
            return
        if tag not in ("path", "br", "img", "input", "meta", "link"):
            self.stack.append(tag)
        if tag == "canvas" and "marks" in a.get("class", ""):
            self.canvases[self.current].append((int(a.get("width", 0)),
                                                int(a.get("height", 0))))
        if tag == "path" and a.get("aria-roledescription") == "line mark" and a.get("d"):
            self.lines[self.current].add(a["d"])

    def handle_endtag(self, tag):
        if self.current is None or tag in ("path",):
            return
        while self.stack and self.stack.pop() != tag:
            pass
        if not self.stack:
            self.current = None


def _dump_dom(chromium: str, page: Path, profile: Path) -> str:
    out = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         f"--proxy-server={BLACKHOLE}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def check_plots_render_offline(tmp_path: Path, template: Path | None) -> None:
    """`dvc plots show` in a toy DVC repo using ``template`` (None: DVC's default page),
    then every chart must have drawn its data in Chromium with the network blocked."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                     "google-chrome"))), None)
    if chromium is None:
        pytest.skip("chromium not on PATH: install it with `apt-get install -y chromium`")
    repo = tmp_path / "toy"
    (repo / "dvclive" / "plots" / "metrics" / "train").mkdir(parents=True)
    (repo / "dvclive/plots/metrics/train/loss.tsv").write_text(
        "step\tloss\n0\t2.5\n1\t2.0\n2\t1.6\n3\t1.4\n")
    (repo / "fig.csv").write_text("threshold,acc_a,acc_b\n-0.5,10,12\n0,20,18\n0.5,25,30\n")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    env = dict(os.environ, **OFFLINE_ENV)

    def dvc(*args):
        out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    dvc("init", "--no-scm", "-q")
    if template is not None:  # the repository's own (relative, .dvc/-based) setting
        setting = _repo_template_setting()
        dest = (repo / ".dvc" / setting).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(template, dest)
        dvc("config", "plots.html_template", setting)
    dvc("plots", "show", "--out", "plots_out")

    page = repo / "plots_out" / "index.html"
    html = page.read_text(encoding="utf-8")
    remote = re.findall(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^\"'\s>]*", html,
                        re.IGNORECASE)
    assert not remote, f"page loads scripts from the network: {remote}"
    ids = re.findall(r'<div id = "([^"]+)">', html)
    assert sorted(ids) == sorted(PLOTS)

    # 1. the page as DVC wrote it (vega-embed's default canvas renderer)
    charts = _Charts(ids)
    charts.feed(_dump_dom(chromium, page, tmp_path / "profile"))
    for plot in ids:
        drawn = [wh for wh in charts.canvases[plot] if wh[0] > 0 and wh[1] > 0]
        assert len(drawn) == 1, f"{plot}: no chart drawn (canvases: {charts.canvases[plot]})"

    # 2. a copy drawn as SVG: every series of every chart is a line through all its points
    head_end = html.rindex("</head>")
    svg_page = page.with_name("svg.html")
    svg_page.write_text(html[:head_end] + SVG_SHIM + html[head_end:], encoding="utf-8")
    charts = _Charts(ids)
    charts.feed(_dump_dom(chromium, svg_page, tmp_path / "profile"))
    for plot, (series, points) in PLOTS.items():
        full = {d for d in charts.lines[plot] if d.count("L") == points - 1}
        assert len(full) == series, (
            f"{plot}: expected {series} line(s) of {points} points, got "
            f"{sorted(charts.lines[plot])}; JS errors: {charts.errors or 'none'}")
    assert not charts.errors, charts.errors


def test_dvc_plots_show_renders_offline(tmp_path):
    check_plots_render_offline(tmp_path, TEMPLATE)
