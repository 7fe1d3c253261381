"""The status page (``GET /``) in a real headless Chromium, on a real 3-node
cluster: it shows the three members and the leader, follows a leader kill
to the new leader, draws the writes and reads it saw, fits a phone's screen,
and asks nothing of any host but the node it came from.

The screenshots are saved in the test's temporary directory (under pytest's
``--basetemp`` when given) as ``status-page.png`` (desktop, after the kill)
and ``status-page-phone.png``; the test prints their paths (``-s`` shows them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dkv.testing.cluster import Cluster
from tests.browser import Browser, chromium_path

pytestmark = pytest.mark.process

#: Milliseconds the page has to show a state (the machine may be loaded).
SHOW_MS = 60_000

#: True once the page lists the members in ``ids`` as reachable and shows
#: ``leader`` as the leader, in its card and in its row.
SHOWS_CLUSTER = """([ids, leader]) => {
  const rows = [...document.querySelectorAll("#members tr")];
  const reachable = rows.filter((r) => r.dataset.reachable === "true").map((r) => r.dataset.member).sort();
  const row = rows.find((r) => r.dataset.member === leader);
  return JSON.stringify(reachable) === JSON.stringify(ids)
    && row !== undefined && row.dataset.role === "leader"
    && document.getElementById("leader").textContent === leader;
}"""

#: True once the page shows a leader other than ``old`` and ``old`` unreachable.
SHOWS_NEW_LEADER = """(old) => {
  const shown = document.getElementById("leader").textContent;
  const row = document.querySelector(`#members tr[data-member="${old}"]`);
  const leaderRow = document.querySelector(`#members tr[data-member="${shown}"]`);
  return shown !== old && leaderRow !== null && leaderRow.dataset.role === "leader"
    && row !== null && row.dataset.reachable === "false";
}"""

#: True once the chart has seen writes and reads (the page's own ``rates()``).
CHART_MOVED = "() => rates().some((r) => r.writes > 0) && rates().some((r) => r.reads > 0)"


def test_status_page_follows_a_leader_kill(tmp_path: Path) -> None:
    chromium = chromium_path()
    if chromium is None:
        pytest.skip("no chromium binary on this machine (Debian's chromium package; .ci/run installs it)")
    with Cluster(tmp_path / "cluster", ["a", "b", "c"]) as c:
        c.start()
        leader = c.wait_settled()
        watcher = next(i for i in c.ids if i != leader)
        base = f"http://127.0.0.1:{c.rest_ports[watcher]}"
        requested: list[str] = []
        with Browser(chromium, tmp_path / "chromium-profile") as browser:
            browser.run(lambda page: page.on("request", lambda r: requested.append(r.url)))
            browser.run(lambda page: page.goto(base + "/"))
            assert browser.run(lambda page: page.locator('meta[name="viewport"]').count()) == 1

            browser.run(lambda page: page.wait_for_function(SHOWS_CLUSTER, arg=[c.ids, leader], timeout=SHOW_MS))

            for n in range(20):
                c.put_retry(f"page/{n}", "v")
                assert c.get(watcher, f"page/{n}")[0] == 200
            browser.run(lambda page: page.wait_for_function(CHART_MOVED, timeout=SHOW_MS))

            c.kill(leader)
            survivors = [i for i in c.ids if i != leader]
            browser.run(lambda page: page.wait_for_function(SHOWS_NEW_LEADER, arg=leader, timeout=SHOW_MS))
            shown = browser.run(lambda page: page.text_content("#leader"))
            assert shown == c.leader(among=survivors, timeout=30)
            changes = int(browser.run(lambda page: page.text_content("#leader-changes")) or 0)
            assert changes >= 2, changes  # the first leader and the new one, seen by the watcher

            screenshot = tmp_path / "status-page.png"
            browser.run(lambda page: page.screenshot(path=str(screenshot), full_page=True))
            print(f"status page screenshot: {screenshot}")

            browser.run(lambda page: page.set_viewport_size({"width": 390, "height": 844}))
            overflow = browser.run(lambda page: page.evaluate("document.documentElement.scrollWidth - innerWidth"))
            assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"
            phone = tmp_path / "status-page-phone.png"
            browser.run(lambda page: page.screenshot(path=str(phone), full_page=True))
            print(f"status page screenshot (phone): {phone}")

        assert requested, "the browser made no request"
        strangers = [u for u in requested if not u.startswith(base + "/")]
        assert not [u for u in requested if u.endswith("/favicon.ico")], "the page asked for a favicon"
        assert not strangers, f"the page asked other hosts: {strangers}"
