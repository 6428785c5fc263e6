"""The explorer page builder (pipeline.explorer): data, escaping, caps, relative pictures, CLI.

The page in a real browser is tested in tests/workflow/test_explorer_browser.py.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from explorer_helpers import HOSTILE, make_results
from neuralgraph.io import atomic_write_text
from pipeline.summary import SummaryError, r2_color
from pipeline.cli import main as pipeline_main
from pipeline.explorer import (
    EXPLORER_NAME,
    MAX_TEXT_CHARS,
    collect,
    config_diff,
    default_out_path,
    embed_json,
    llm_usage,
    render_page,
    write_explorer,
)

REPO = Path(__file__).resolve().parents[1]


class _Tags(HTMLParser):
    """Every start tag of a page and the text of its scripts, as a browser's tokenizer sees them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("hostile") / "results" / "exp", n_nodes=12, n_blocks=2, text=HOSTILE)


@pytest.fixture(scope="module")
def hostile_page(hostile_results) -> Path:
    return write_explorer(hostile_results)


def _parse(path: Path) -> _Tags:
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_embedded_json_has_no_markup_characters_and_round_trips():
    data = {"text": HOSTILE, "nested": [HOSTILE, {"k": "</SCRIPT >"}]}
    text = embed_json(data)
    assert not set("<>&") & set(text)
    assert json.loads(text) == data


def test_hostile_llm_text_cannot_leave_the_data_block(hostile_page):
    page = _parse(hostile_page)
    assert [tag for tag, _ in page.tags if tag in ("script", "img", "iframe")] == ["script", "script"]
    data_tag, code_tag = [attrs for tag, attrs in page.tags if tag == "script"]
    assert data_tag == {"type": "application/json", "id": "explorer-data"} and code_tag == {}
    data = json.loads(page.scripts[0])
    node = data["nodes"][4]  # iteration 5: hostile text in its code diff too
    # one-line log fields lose line breaks (U+2028 too) when the decision is validated; the rest survives as data
    assert HOSTILE.replace("\u2028", "").rstrip() in node["agent"]["log"]["observation"]
    assert HOSTILE in node["memory"] and HOSTILE in node["code_diff"]


def test_script_never_writes_markup_from_data():
    script = (REPO / "pipeline" / "explorer_assets" / "explorer.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, f"{sink} would turn data into markup or code"


def test_content_security_policy_allows_only_the_inlined_script_and_style(hostile_page):
    page = _parse(hostile_page)
    policy = next(attrs["content"] for tag, attrs in page.tags
                  if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy")
    digest = base64.b64encode(hashlib.sha256(page.scripts[1].encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "unsafe" not in policy
    assert not re.search(r"https?:", policy)


def test_page_references_nothing_outside_itself(hostile_page):
    text = hostile_page.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text, re.IGNORECASE)
    page = _parse(hostile_page)
    assert not [attrs for tag, attrs in page.tags if tag in ("link", "script") and ("src" in attrs or "href" in attrs)]


def test_every_node_with_its_colour_state_and_best_mark(hostile_results, hostile_page):
    data = json.loads(_parse(hostile_page).scripts[0])
    assert [n["id"] for n in data["nodes"]] == list(range(1, 13))
    assert [b["nodes"] for b in data["blocks"]] == [list(range(1, 7)), list(range(7, 13))]
    for node in data["nodes"]:
        metrics = json.loads((hostile_results / node["dir"] / "metrics.json").read_text())
        assert node["metrics"]["connectivity_R2"] == metrics["connectivity_R2"]
        assert node["color"] == r2_color(metrics["connectivity_R2"])
        assert node["state"] == ("diverged" if metrics["status"] == "diverged" else "ok")
    for block in data["blocks"]:
        members = [n for n in data["nodes"] if n["id"] in block["nodes"]]
        best = max((n for n in members if n["metrics"]["connectivity_R2"] is not None),
                   key=lambda n: n["metrics"]["connectivity_R2"])
        assert [n["id"] for n in members if n["best"]] == [best["id"]]


def test_config_diff_lists_changed_keys_only():
    parent = {"training": {"lr": 1e-3, "batch_size": 8, "steps": [1, 2]}, "graph_model": {"hidden_dim": 64}}
    child = {"training": {"lr": 2e-3, "batch_size": 8, "steps": [1, 3], "seed": 1}, "graph_model": {"hidden_dim": 64}}
    assert config_diff(parent, child) == [["training.lr", 1e-3, 2e-3], ["training.seed", None, 1],
                                          ["training.steps", "[1, 2]", "[1, 3]"]]


def test_node_config_diff_is_against_its_parent(hostile_results, tmp_path):
    data = collect(hostile_results, tmp_path)
    by_id = {n["id"]: n for n in data["nodes"]}
    children = [n for n in data["nodes"] if n["fields"]["parent"] is not None]
    assert any(n["config_diff"] for n in children)
    for child in children:
        assert child["diff_parent"] == child["fields"]["parent"]
        parent_lr = _learning_rate(hostile_results / by_id[child["diff_parent"]]["dir"])
        child_lr = _learning_rate(hostile_results / child["dir"])
        expected = [] if parent_lr == child_lr else [["training.learning_rate_W_start", parent_lr, child_lr]]
        assert child["config_diff"] == expected
    assert by_id[1]["config_diff"] is None  # the first node has no parent to compare with


def _learning_rate(folder: Path) -> float:
    return yaml.safe_load((folder / "config.yaml").read_text())["training"]["learning_rate_W_start"]


def test_pictures_are_relative_to_the_page_and_exist(hostile_results, tmp_path):
    out = tmp_path / "elsewhere" / EXPLORER_NAME
    write_explorer(hostile_results, out)
    data = json.loads(_parse(out).scripts[0])
    for node in data["nodes"]:
        assert node["plots"], node["id"]
        for plot in node["plots"]:
            assert not os.path.isabs(plot["src"]) and ":" not in plot["src"]
            assert (out.parent / plot["src"]).resolve().is_file()
    beside_summary = collect(hostile_results, default_out_path(hostile_results).parent)
    assert beside_summary["nodes"][0]["plots"][0]["src"] == "../iter_001/plots/connectivity.png"


def test_long_texts_are_capped(tmp_path):
    results = make_results(tmp_path / "results" / "big", n_nodes=2, n_blocks=1)
    atomic_write_text(results / "iter_001" / "memory.md", "x" * (3 * MAX_TEXT_CHARS))
    node = collect(results, tmp_path)["nodes"][0]
    assert MAX_TEXT_CHARS < len(node["memory"]) < MAX_TEXT_CHARS + 200
    assert node["memory"].endswith(f"({2 * MAX_TEXT_CHARS} more characters in memory.md)")


def test_llm_usage_sums_the_calls_and_keeps_unknown_cost_unknown():
    record = {"attempts": [{"call": {"model": "m", "input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5}},
                           {"call": {"model": "m", "input_tokens": 5, "output_tokens": 1, "cost_usd": None}},
                           {"call": None}]}
    assert llm_usage(record) == {"calls": 2, "cost_usd": 0.5, "models": ["m"], "input_tokens": 15, "output_tokens": 3}
    assert llm_usage({"attempts": [{"call": None}]})["cost_usd"] is None


def test_next_change_is_the_childs_real_start_and_the_last_round_makes_no_node():
    from pipeline.explorer import NO_NEXT_NODE, agent_entry

    decision = {"parent": "root", "strategy": "exploit", "log": {"next_parent": "root"},
                "config_mutation": {"parameter": "learning_rate_W_start", "old": None, "new": 0.0025}}
    child = {"id": 7, "parent": None, "mutation": {"parameter": "learning_rate_W_start", "old": 0.0022, "new": 0.0025}}
    events = [{"event": "http_retry", "text": "slot 1: anthropic call: HTTP 529 on HTTP attempt 1; tried again"}]
    entry = agent_entry({}, {"decision": decision, "next": child, "events": events,
                             "round_events": [{"event": "spend_cap", "text": "spend cap: spent 1 USD"}]})
    assert entry["log"]["next change"] == "learning_rate_W_start: 0.0022 -> 0.0025"  # not "nan -> 0.0025"
    assert entry["log"]["next node"] == "7 (parent root)"
    assert entry["events"] == ["spend cap: spent 1 USD", events[0]["text"]]
    last = agent_entry({}, {"decision": decision, "next": None})["log"]
    assert last["next node"] == NO_NEXT_NODE
    assert not {"next parent", "next strategy", "next change"} & set(last)
    older = agent_entry({}, {"decision": decision})["log"]  # a record without "next": the decision's own text
    assert older["next change"] == "learning_rate_W_start: nan -> 0.0025"


def test_render_page_escapes_the_title():
    page = render_page({"experiment": "<b>x</b>", "nodes": [], "blocks": [], "scale": {}})
    assert "<title>&lt;b&gt;x&lt;/b&gt;: exploration explorer</title>" in page


def test_cli_writes_the_page_and_refuses_an_empty_folder(hostile_results, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert pipeline_main(["explorer", "--results", str(hostile_results), "--out", str(out)]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert pipeline_main(["explorer", "--results", str(tmp_path / "nothing")]) == 1
    assert "no iteration folder" in capsys.readouterr().err
    with pytest.raises(SummaryError):
        write_explorer(tmp_path / "nothing")


def test_science_package_imports_neither_agent_nor_pipeline():
    offenders = []
    for path in sorted((REPO / "neuralgraph").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("agent", "pipeline")]
    assert not offenders, offenders
