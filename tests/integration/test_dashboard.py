"""`rillet dashboard` in a real headless browser (Debian's chromium driven by selenium).

The page loads, shows the topics, and after the SIGKILL of a partition's leader (RF=2)
shows the new leader within a second. Without chromium, chromedriver or selenium the test
skips, except under CI (env CI set), where it fails: CI installs them (.ci/run). Every
process the test starts (the dashboard, chromedriver, chromium's many) is killed after it,
on failure too, and checked gone.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from rillet.testing import LocalCluster

NEW_LEADER_LIMIT_S = 1.0


def _browser_parts() -> tuple[str, str]:
    """Paths of chromium and chromedriver; skip (fail under CI) when anything is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [what for what, found in (("chromium", chromium), ("chromium-driver", driver)) if not found]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install 'rillet[test]')")
    if missing:
        reason = f"the browser test needs {', '.join(missing)} (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


def _start_dashboard(cluster) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "rillet.tools.cli", "dashboard"], env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "http://" not in line:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"rillet dashboard printed no URL: {line!r} {err!r}")
    return proc, line[line.index("http://"):].strip()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _open_browser(chromium: str, driver_path: str, profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-extensions", "--no-first-run", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    service = Service(executable_path=driver_path)
    return webdriver.Chrome(service=service, options=options), service


def _close_browser(browser, service) -> list[int]:
    """Quit, then kill whatever chromedriver and its chromium children left; the pids still alive."""
    proc = getattr(service, "process", None)
    family = []
    if proc is not None:
        try:
            root = psutil.Process(proc.pid)
            family = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    try:
        browser.quit()
    except Exception:  # noqa: BLE001 - a dead browser is killed below all the same
        pass
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=5)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _leader_shown(browser, topic: str, partition: int) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return browser.find_element("id", f"leader-{topic}-{partition}").text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


@pytest.fixture(scope="module")
def cluster2(tmp_path_factory):
    with LocalCluster(spus=2, home=tmp_path_factory.mktemp("rillet")) as cluster:
        cluster.create_topic("drill", partitions=2, replication=2)
        cluster.create_topic("quiet", partitions=1, replication=1)
        yield cluster
    assert not cluster.leftovers()


def test_dashboard_answers_only_with_the_token(cluster2):
    dashboard, url = _start_dashboard(cluster2)
    try:
        base, token = url.split("?token=")
        assert base.startswith("http://127.0.0.1:") and len(token) >= 20
        assert _status(base) == 403
        assert _status(f"{base}state.json") == 403
        assert _status(f"{base}state.json?token=wrong-{token}") == 403
        assert _status(f"{base}?token={token[:-1]}") == 403
        assert _status(f"{base}nothing?token={token}") == 404
        assert _status(url) == 200
        with urllib.request.urlopen(f"{base}state.json?token={token}", timeout=5) as answer:
            state = json.load(answer)
        assert state["cluster"] == cluster2.name and state["error"] is None
        assert {(p["topic"], p["partition"]) for p in state["partitions"]} == {("drill", 0), ("drill", 1), ("quiet", 0)}
        assert [s["online"] for s in state["spus"]] == [True, True]
    finally:
        _stop(dashboard)
    assert dashboard.returncode == 0


def test_dashboard_shows_topics_and_new_leader_within_a_second(cluster2, tmp_path):
    cluster = cluster2          # its last use: the killed SPU is not restarted
    chromium, driver_path = _browser_parts()
    dashboard, url = _start_dashboard(cluster)
    browser = service = None
    try:
        browser, service = _open_browser(chromium, driver_path, tmp_path / "chromium-profile")
        browser.get(url)
        with cluster.admin() as admin:
            old = next(p for p in admin.list_partitions(["drill"]) if p.partition == 0).leader
        deadline = time.monotonic() + 20
        while _leader_shown(browser, "drill", 0) != str(old):
            assert time.monotonic() < deadline, f"page never showed drill/0's leader {old}"
            time.sleep(0.05)
        body = browser.find_element("tag name", "body").text
        assert "drill" in body and "quiet" in body

        cluster.kill_spu(old, signal.SIGKILL)
        killed_at = time.monotonic()
        while True:
            shown = _leader_shown(browser, "drill", 0)
            elapsed = time.monotonic() - killed_at
            if shown not in (None, str(old), "none"):
                break
            assert elapsed < 10, f"page still shows leader {shown} of drill/0 10 s after the kill"
            time.sleep(0.02)
        with cluster.admin() as admin:
            new = next(p for p in admin.list_partitions(["drill"]) if p.partition == 0).leader
        assert shown == str(new) != str(old)
        assert elapsed < NEW_LEADER_LIMIT_S, f"new leader shown {elapsed:.2f} s after the kill"
        deadline = time.monotonic() + 5
        while "leader changed drill/0" not in browser.find_element("id", "events").text:
            assert time.monotonic() < deadline, "the timeline never listed the leader change"
            time.sleep(0.05)
    finally:
        left = _close_browser(browser, service) if browser is not None else []
        _stop(dashboard)
    assert not left, f"browser processes left running: {left}"
    assert dashboard.returncode == 0
