"""Issue 10's campaigns, small enough for CI; `rillet-campaign` runs them at full size (README)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rillet.testing import LocalCluster
from rillet.tools import campaign_attack, campaign_fuzz, campaign_tails

CAMPAIGN = [sys.executable, "-m", "rillet.tools.campaign"]


def test_fuzz_small_crashes_nothing_and_stores_no_poison(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        report = campaign_fuzz.run_fuzz(cluster, frames=300, seed=3)
        left = cluster
    assert report["frames"] >= 290, report
    assert all(report["by_kind"][kind] > 0 for kind in campaign_fuzz.KINDS), report["by_kind"]
    assert all(report["by_target"][t] > 0 for t in campaign_fuzz.TARGETS), report["by_target"]
    assert report["crashes"] == 0 and report["poison_acknowledged"] == 0, report
    assert report["records_stored_by_fuzz"] == 0 and report["internal_errors_logged"] == 0, report
    assert report["normal_client_served"], report
    assert report["rss_mib"]["spu-5001"]["after"] - report["rss_mib"]["spu-5001"]["before"] < 16, report
    assert campaign_fuzz.clean(report)
    assert not left.leftovers()


def test_fuzz_never_sends_a_frame_the_decoder_accepts():
    """The generator drops a random payload that would decode: no random ShutdownCluster, ever."""
    import random
    from rillet.ipc import messages as m
    decoder = m.new_decoder()
    for case in campaign_fuzz.cases(random.Random(5), 2000, 5001):
        if case is None or case.kind not in ("wrong-types", "random-msgpack"):
            continue
        body = case.payload[len(campaign_fuzz.hello(case.target, 5001)) + 4:]
        with pytest.raises(Exception):
            decoder.decode(body)


def test_tails_small_recovers_every_case_to_the_last_whole_batch(tmp_path):
    report = campaign_tails.run_tails(600, seed=9, workdir=str(tmp_path))
    assert report["cases"] == 600
    assert report["by_kind"]["cut"] > 0 and report["by_kind"]["zero-page"] > 0, report["by_kind"]
    assert report["mismatches"] == 0, report["first_mismatches"]
    assert not list(tmp_path.iterdir()), "the campaign removes its files"


def test_tails_model_catches_a_wrong_recovery(tmp_path):
    """The byte model is not a copy of the code: a recovery that kept one batch too many is a mismatch."""
    import random
    rng = random.Random(4)
    golden = campaign_tails.make_golden(tmp_path, rng)
    last = golden.bounds[-2]
    damaged = bytearray(golden.data)
    damaged[last + 30] ^= 0x10                       # inside the last batch's CRC-covered bytes
    assert campaign_tails.check(tmp_path, golden, bytes(damaged), True) is None
    lying = campaign_tails.Golden(golden.files, golden.active, golden.data, golden.bounds,
                                  golden.next_offsets[:-2] + [golden.next_offsets[-1]] * 2)
    assert "log end offset" in campaign_tails.check(tmp_path, lying, bytes(damaged), True)


def test_attack_small_keeps_the_spu_bounded_and_the_client_served(tmp_path):
    with LocalCluster(spus=1, home=tmp_path) as cluster:
        report = campaign_attack.run_attack(cluster, campaign_attack.Sizes().scaled(0.05, hold_s=0.3))
        left = cluster
    phases = report["phases"]
    assert list(phases) == ["baseline", "fetch-unread", "big-prefixes", "idle-crowd", "backlog-flood"]
    assert report["spu_pid_unchanged"] and report["normal_client_failed_rounds"] == 0, report
    assert all(p["normal_client"]["rounds"] > 0 for p in phases.values()), report
    assert phases["idle-crowd"]["admin_cli_served"], phases["idle-crowd"]
    assert report["peak_rss_mib"] <= report["rss_bound_mib"], report
    after = phases["big-prefixes"]["anon_mib"]
    assert after["after"] < after["before"] + 16, after      # the 60 MiB body is given back
    assert campaign_attack.clean(report)
    assert not left.leftovers()


def test_the_tool_prints_one_clean_line_per_campaign_and_refuses_bad_flags():
    done = subprocess.run([*CAMPAIGN, "--campaign", "tails", "--tails", "40", "--seed", "2"],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert (line["campaign"], line["cases"], line["clean"]) == ("TAILS", 40, True)
    bad = subprocess.run([*CAMPAIGN, "--campaign", "NOPE"], capture_output=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.decode().count("\n") == 1 and "NOPE" in bad.stderr.decode()
