"""Helpers of the explorer tests: a synthetic results folder and a headless Chromium.

The synthetic folder holds what the stages write for each iteration (metrics.json, node.json,
proposal.json, config.yaml, code.diff, decision.json, memory.md, plots/) built from the
agent's own record types, so a format change there shows up here. It is the 200-node case of
the load-time test and the carrier of hostile LLM text in the escaping tests.
"""
from __future__ import annotations

import base64
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Optional

import yaml

from agent.decision import ConfigMutation, Decision, LogEntry, MemoryUpdate
from agent.records import round_record
from agent.tree import NodeRecord
from neuralgraph.io import atomic_write_json, atomic_write_text

#: A 1x1 PNG: plots that exist on disk without drawing 1200 matplotlib figures.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PLOT_NAMES = ("connectivity.png", "rollout.png", "loss.png")
HOSTILE = "</script><img src=x onerror=\"document.title='pwned'\"><!-- & \u2028"

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _config(lr_w: float, time_step: int) -> dict:
    return {"simulation": {"n_neurons": 100}, "graph_model": {"hidden_dim": 64},
            "training": {"time_step": time_step, "learning_rate_W_start": lr_w, "batch_size": 8}}


def _decision_record(node: NodeRecord, next_parent, text: str, cost: Optional[float]) -> dict:
    """A decision.json as agent decide writes it (see agent.decide.decision_record)."""
    decision = Decision(
        parent=next_parent, strategy="exploit",
        log=LogEntry(outcome=node.metrics["outcome"], mode="success-exploit", parent_rule=f"best UCB {text}",
                     observation=f"observation of node {node.id} {text}", next_parent=next_parent),
        memory_update=MemoryUpdate(emerging_observations="notes", current_hypothesis=f"hypothesis {text}"),
        config_mutation=ConfigMutation(parameter="learning_rate_W_start", old=1e-3, new=2e-3))
    call = None if cost is None else {"model": "claude-test", "input_tokens": 1000, "output_tokens": 200,
                                      "cost_usd": cost}
    return round_record({"iteration": node.iteration, "block": node.block}, [{
        "slot": 1, "node_id": node.id, "policy": "anthropic", "decision": decision.model_dump(mode="json"),
        "attempts": [{"policy": "anthropic", "accepted": True, "reason": None, "call": call}]}])


def make_results(root: Path, n_nodes: int = 200, n_blocks: int = 4, text: str = "", seed: int = 0) -> Path:
    """results/<root.name>/ with ``n_nodes`` finished iterations in ``n_blocks`` blocks.

    Every node but a block's first has a random earlier parent of its block; every 7th node
    diverged (no R2); ``text`` is put into every free-text field the agent writes.
    """
    rng = random.Random(seed)
    per_block = math.ceil(n_nodes / n_blocks)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n_nodes + 1):
        block = (i - 1) // per_block + 1
        first = (block - 1) * per_block + 1
        parent = None if i == first else rng.randint(first, i - 1)
        diverged = i % 7 == 0
        r2 = None if diverged else 1 - 10 ** -rng.uniform(0.2, 3.8)
        time_step = (1, 4, 16, 32, 64)[(block - 1) % 5]
        lr_w = round(rng.choice((1e-3, 2e-3, 5e-3)), 6)
        metrics = {"iteration": i, "status": "diverged" if diverged else "ok",
                   "outcome": "failed" if diverged else ("converged" if r2 > 0.9 else "partial"),
                   "connectivity_R2": r2, "test_R2": None if diverged else rng.random(),
                   "final_loss": rng.random(), "training_time_min": rng.uniform(1, 5),
                   "config": {"time_step": time_step}}
        mutation = None if parent is None else {"parameter": "learning_rate_W_start", "old": 1e-3, "new": lr_w}
        node = NodeRecord(id=i, parent=parent, block=block, iteration=i, time_step=time_step, dir=f"iter_{i:03d}",
                          metrics=metrics, mutation=mutation, strategy="exploit" if parent else "", policy="heuristic")
        folder = root / node.dir
        atomic_write_json(folder / "metrics.json", metrics)
        atomic_write_json(folder / "node.json", node.to_dict())
        atomic_write_json(folder / "proposal.json", {"id": i, "parent": parent, "block": block, "iteration": i,
                                                     "derived_from": parent, "strategy": node.strategy})
        atomic_write_text(folder / "config.yaml", yaml.safe_dump(_config(lr_w, time_step)))
        atomic_write_text(folder / "code.diff", f"--- a/train_loop.py\n+++ b/train_loop.py\n@@ -1 +1 @@\n-old\n+new {text}\n"
                          if i % 5 == 0 else "")
        next_parent = i if i % per_block else "root"
        atomic_write_json(folder / "decision.json", _decision_record(node, next_parent, text, 0.01 if i % 3 == 0 else None))
        atomic_write_text(folder / "memory.md", f"# Working memory\n\n## Iter {i}\n{text}\n")
        (folder / "plots").mkdir(exist_ok=True)
        for name in PLOT_NAMES:
            (folder / "plots" / name).write_bytes(TINY_PNG)
    return root


def browser_or_skip():
    """A headless Chromium WebDriver reading the browser console, or pytest.skip saying why there is none.

    The driver path is given explicitly so Selenium Manager never downloads a driver; the
    flags keep Chromium from any background network traffic of its own.
    """
    import tempfile

    import pytest

    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"no browser: {CHROMIUM} / {CHROMEDRIVER} missing (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="explorer-chrome-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    except Exception as exc:  # the browser is installed but cannot start here
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless chromium could not start: {exc}")
    driver.explorer_profile = profile
    return driver


def stop_browser(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.explorer_profile, ignore_errors=True)


def open_page(driver, page: Path, timeout: float = 10.0) -> float:
    """Load ``page`` (a file) after draining the logs of earlier pages; wall seconds until it has rendered.

    The page marks the end of its own rendering with ``data-render-ms`` on <html>.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser"), driver.get_log("performance")
    start = time.perf_counter()
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.documentElement.getAttribute('data-render-ms')"))
    return time.perf_counter() - start


def requested_urls(driver) -> list[str]:
    """Every URL the browser asked for since the last call (DevTools Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver) -> list[dict]:
    """Console entries of level SEVERE since the last call (the log is drained by reading)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
