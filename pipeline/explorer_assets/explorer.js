// The exploration explorer's script, inlined into explorer.html by pipeline/explorer.py.
// Every text from the results (LLM output included) is data: it reaches the page only through
// textContent / setAttribute, never parsed as HTML. Nothing is fetched: the data is the JSON
// block of the page, the pictures are relative paths to local files.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("explorer-data").textContent);
  var SVG_NS = "http://www.w3.org/2000/svg";
  var DX = 64, DY = 76, PAD_X = 36, PAD_Y = 34, RADIUS = 14;
  var byId = {};
  DATA.nodes.forEach(function (n) { byId[n.id] = n; });
  var selected = null;
  var sortState = { key: "iteration", dir: 1 };

  // ------------------------------------------------------------------ element helpers

  function el(tag, props, children) {
    var node = document.createElement(tag);
    props = props || {};
    Object.keys(props).forEach(function (key) {
      if (key === "text") { node.textContent = props.text; }
      else if (key === "cls") { node.className = props.cls; }
      else { node.setAttribute(key, props[key]); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    return node;
  }

  function fmt(value) {
    if (value === null || value === undefined || value === "") { return "\u2013"; }
    if (typeof value === "number") {
      if (Number.isInteger(value)) { return String(value); }
      return String(Number(value.toPrecision(6)));
    }
    if (typeof value === "boolean") { return value ? "yes" : "no"; }
    return String(value);
  }

  function r2Text(node) {
    var r2 = node.metrics.connectivity_R2;
    return typeof r2 === "number" ? r2.toFixed(4) : "nan";
  }

  function nodeTitle(node) {
    var parts = ["node " + node.id, "iteration " + fmt(node.fields.iteration), "R2 " + r2Text(node)];
    if (node.state !== "ok") { parts.push(node.state); }
    if (node.best) { parts.push("best of block"); }
    if (node.fields.strategy) { parts.push(node.fields.strategy); }
    if (node.fields.mutation) { parts.push(node.fields.mutation); }
    return parts.join(" \u00b7 ");
  }

  // ------------------------------------------------------------------ header and legend

  function legend() {
    var stops = DATA.scale.stops.map(function (s) { return s[1] + " " + (100 * s[0] / DATA.scale.max) + "%"; });
    var bar = el("span", { cls: "legend-bar" });
    bar.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    var ticks = el("span", { cls: "legend-ticks" });
    for (var n = 0; n <= DATA.scale.max; n++) {
      var r2 = 1 - Math.pow(10, -n);
      ticks.appendChild(el("span", { text: n === 0 ? "\u22640" : r2.toFixed(n) }));
    }
    var grey = el("span", { cls: "swatch" });
    grey.style.background = DATA.scale.no_value;
    return el("div", { cls: "legend", id: "legend" }, [
      el("span", { text: "connectivity_R2, coloured by -log10(1 - R2): " }),
      el("span", { cls: "legend-scale" }, [bar, ticks]),
      grey, el("span", { text: " no value " }),
      el("span", { cls: "swatch ring-best" }), el("span", { text: " best of block " }),
      el("span", { cls: "swatch ring-failed" }), el("span", { text: " failed  \u00d7 diverged" }),
    ]);
  }

  function header() {
    var best = null;
    DATA.nodes.forEach(function (n) {
      var r2 = n.metrics.connectivity_R2;
      if (typeof r2 === "number" && (best === null || r2 > best.metrics.connectivity_R2)) { best = n; }
    });
    var facts = [DATA.nodes.length + " nodes", DATA.blocks.length + " blocks"];
    if (best) { facts.push("best: node " + best.id + " (R2 " + r2Text(best) + ")"); }
    facts.push("LLM cost: " + (DATA.total_cost_usd === null ? "none recorded" : "$" + DATA.total_cost_usd.toFixed(4)));
    facts.push("generated " + DATA.generated_at);
    var tabs = el("nav", { cls: "tabs" }, [
      el("button", { id: "show-tree", type: "button", cls: "active", text: "Tree" }),
      el("button", { id: "show-table", type: "button", text: "Table" }),
    ]);
    return el("header", {}, [
      el("h1", { text: DATA.experiment + ": exploration" }),
      el("p", { cls: "facts", id: "facts", text: facts.join(" \u00b7 ") }),
      legend(), tabs,
    ]);
  }

  // ------------------------------------------------------------------ tree view

  function blockTree(block) {
    var nodes = block.nodes.map(function (id) { return byId[id]; });
    var minX = Math.min.apply(null, nodes.map(function (n) { return n.x; }));
    var maxX = Math.max.apply(null, nodes.map(function (n) { return n.x; }));
    var maxDepth = Math.max.apply(null, nodes.map(function (n) { return n.depth; }));
    var pos = {};
    nodes.forEach(function (n) { pos[n.id] = [PAD_X + (n.x - minX) * DX, PAD_Y + n.depth * DY]; });
    var width = PAD_X * 2 + (maxX - minX) * DX + 40, height = PAD_Y * 2 + maxDepth * DY + 10;
    var root = svg("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, "class": "tree" });
    nodes.forEach(function (n) {
      var parent = n.fields.parent;
      if (parent === null || parent === undefined || !(parent in pos)) { return; }
      var line = svg("line", { x1: pos[parent][0], y1: pos[parent][1], x2: pos[n.id][0], y2: pos[n.id][1], "class": "edge" });
      var tip = svg("title", {});
      tip.textContent = n.fields.mutation || "";
      line.appendChild(tip);
      root.appendChild(line);
    });
    nodes.forEach(function (n) { root.appendChild(treeNode(n, pos[n.id])); });
    var best = nodes.filter(function (n) { return n.best; })[0];
    var title = "Block " + fmt(block.block) + " \u00b7 time_step " + fmt(block.time_step) + " \u00b7 " + nodes.length +
      " nodes" + (best ? " \u00b7 best: node " + best.id + " (R2 " + r2Text(best) + ")" : "");
    return el("section", { cls: "block", "data-block": String(block.block) }, [el("h2", { text: title }),
      el("div", { cls: "tree-scroll" }, [root])]);
  }

  function treeNode(n, xy) {
    var g = svg("g", { "class": "node state-" + n.state + (n.best ? " best" : ""), "data-id": String(n.id),
      transform: "translate(" + xy[0] + "," + xy[1] + ")", tabindex: "0", role: "button" });
    var tip = svg("title", {});
    tip.textContent = nodeTitle(n);
    g.appendChild(tip);
    if (n.best) { g.appendChild(svg("circle", { r: RADIUS + 5, "class": "ring-best" })); }
    g.appendChild(svg("circle", { r: RADIUS, fill: n.color, "class": "dot" }));
    if (n.state === "diverged") {
      g.appendChild(svg("path", { d: "M8,-20L18,-10M18,-20L8,-10", "class": "cross" }));
    }
    var label = svg("text", { y: 4, "class": "id" + (n.nines === null || n.nines > DATA.scale.max / 2 ? " dark" : "") });
    label.textContent = String(n.id);
    g.appendChild(label);
    var r2 = svg("text", { y: RADIUS + 14, "class": "r2" });
    r2.textContent = r2Text(n);
    g.appendChild(r2);
    g.addEventListener("click", function () { select(n.id); });
    g.addEventListener("keydown", function (event) { if (event.key === "Enter") { select(n.id); } });
    return g;
  }

  // ------------------------------------------------------------------ table view

  function tableColumns() {
    var seen = {}, columns = [];
    function add(key, get) { if (!seen[key]) { seen[key] = true; columns.push({ key: key, get: get }); } }
    DATA.nodes.forEach(function (n) {
      Object.keys(n.fields).forEach(function (k) { add(k, function (m) { return m.fields[k]; }); });
    });
    add("R2 nines", function (m) { return m.nines; });
    DATA.nodes.forEach(function (n) {
      Object.keys(n.metrics).forEach(function (k) { add(k, function (m) { return m.metrics[k]; }); });
    });
    add("llm_cost_usd", function (m) { return m.agent ? m.agent.usage.cost_usd : null; });
    return columns;
  }

  function compare(a, b) {
    var na = a === null || a === undefined || a === "", nb = b === null || b === undefined || b === "";
    if (na || nb) { return na && nb ? 0 : (na ? 1 : -1); }  // missing values last in both directions
    if (typeof a === "number" && typeof b === "number") { return (a - b) * sortState.dir; }
    return String(a).localeCompare(String(b), undefined, { numeric: true }) * sortState.dir;
  }

  function renderTable(view) {
    var columns = tableColumns();
    var column = columns.filter(function (c) { return c.key === sortState.key; })[0] || columns[0];
    var rows = DATA.nodes.slice().sort(function (a, b) {
      return compare(column.get(a), column.get(b)) || (a.id - b.id);
    });
    var head = el("tr", {}, columns.map(function (c) {
      var mark = c.key === sortState.key ? (sortState.dir > 0 ? " \u25b2" : " \u25bc") : "";
      var th = el("th", { text: c.key + mark, "data-key": c.key, title: "sort by " + c.key });
      th.addEventListener("click", function () {
        sortState = { key: c.key, dir: sortState.key === c.key ? -sortState.dir : (c.key === "iteration" ? 1 : -1) };
        renderTable(view);
      });
      return th;
    }));
    var body = el("tbody", {}, rows.map(function (n) {
      var tr = el("tr", { "data-id": String(n.id), cls: "state-" + n.state + (n.id === selected ? " selected" : "") },
        columns.map(function (c) { return el("td", { text: fmt(c.get(n)), "data-key": c.key }); }));
      tr.firstChild.style.borderLeft = "6px solid " + n.color;
      tr.addEventListener("click", function () { select(n.id); });
      return tr;
    }));
    view.textContent = "";
    view.appendChild(el("table", { id: "node-table", cls: "grid" }, [el("thead", {}, [head]), body]));
  }

  // ------------------------------------------------------------------ details of one node

  function section(title, id, content) {
    return el("section", { cls: "detail", id: id }, [el("h3", { text: title }), content]);
  }

  function keyValueTable(id, entries) {
    return el("table", { id: id, cls: "kv" }, [el("tbody", {}, entries.map(function (kv) {
      return el("tr", {}, [el("th", { text: kv[0] }), el("td", { text: fmt(kv[1]), "data-key": kv[0] })]);
    }))]);
  }

  function configDiff(n) {
    if (n.config_diff === null) { return el("p", { cls: "note", text: "no parent: the first node of the exploration" }); }
    if (!n.config_diff.length) { return el("p", { cls: "note", text: "same config as node " + n.diff_parent }); }
    var head = el("tr", {}, [el("th", { text: "key" }), el("th", { text: "node " + n.diff_parent }),
      el("th", { text: "node " + n.id })]);
    return el("table", { id: "config-diff", cls: "grid" }, [el("thead", {}, [head]), el("tbody", {},
      n.config_diff.map(function (d) {
        return el("tr", { "data-key": d[0] }, [el("td", { text: d[0] }), el("td", { cls: "old", text: fmt(d[1]) }),
          el("td", { cls: "new", text: fmt(d[2]) })]);
      }))]);
  }

  function codeDiff(text) {
    if (!text) { return el("p", { cls: "note", text: "no code change (train_loop.py as in the parent)" }); }
    var pre = el("pre", { id: "code-diff", cls: "diff" });
    text.split("\n").forEach(function (line) {
      var kind = line.charAt(0) === "+" ? "add" : line.charAt(0) === "-" ? "del" : line.charAt(0) === "@" ? "hunk" : "";
      pre.appendChild(el("span", { cls: kind, text: line + "\n" }));
    });
    return pre;
  }

  function agentPart(n) {
    if (!n.agent) { return el("p", { cls: "note", text: "no decision.json yet (the agent has not decided after this node)" }); }
    var a = n.agent, u = a.usage;
    var log = el("dl", { id: "agent-log" }, []);
    Object.keys(a.log).forEach(function (k) { log.appendChild(el("dt", { text: k })); log.appendChild(el("dd", { text: a.log[k] })); });
    var cost = u.calls ? (u.calls + " call(s), " + (u.models.join(", ") || "model unknown") + ", " + u.input_tokens +
      " input / " + u.output_tokens + " output tokens, cost " + (u.cost_usd === null ? "unknown" : "$" + u.cost_usd.toFixed(4)))
      : "no LLM call";
    var attempts = el("ul", { id: "attempts" }, a.attempts.map(function (t) {
      return el("li", { text: t.policy + ": " + (t.accepted ? "accepted" : "refused") + (t.reason ? " \u2013 " + t.reason : "") });
    }));
    var events = el("ul", { id: "decide-events" }, (a.events || []).map(function (t) { return el("li", { text: t }); }));
    return el("div", {}, [log, el("p", { id: "decision-policy" }, [el("b", { text: "policy: " }), a.policy]),
      el("p", { id: "llm-cost" }, [el("b", { text: "LLM: " }), cost]), attempts, events]);
  }

  function plots(n) {
    if (!n.plots.length) { return el("p", { cls: "note", text: "no plots" }); }
    return el("div", { id: "plots", cls: "plots" }, n.plots.map(function (p) {
      var img = el("img", { src: p.src, alt: p.name });
      img.addEventListener("error", function () {
        img.replaceWith(el("p", { cls: "note", text: "picture not found at " + p.src +
          " (open explorer.html from its results folder)" }));
      });
      var link = el("a", { href: p.src, target: "_blank", rel: "noopener" }, [img]);
      return el("figure", {}, [link, el("figcaption", { text: p.name })]);
    }));
  }

  function memory(n) {
    if (!n.memory) { return el("p", { cls: "note", text: "no memory.md" }); }
    return el("details", {}, [el("summary", { text: "memory.md after iteration " + fmt(n.fields.iteration) }),
      el("pre", { id: "memory", cls: "memory", text: n.memory })]);
  }

  function renderDetails(n) {
    var pane = document.getElementById("details");
    pane.textContent = "";
    var badge = n.state === "ok" ? "" : " (" + n.state + ")";
    pane.appendChild(el("h2", { id: "details-title", text: "Node " + n.id + " \u00b7 iteration " + fmt(n.fields.iteration) +
      " \u00b7 block " + fmt(n.fields.block) + badge + (n.best ? " \u00b7 best of block" : "") }));
    pane.appendChild(el("p", { cls: "facts", text: n.dir + " \u00b7 parent " + fmt(n.fields.parent) +
      " \u00b7 strategy " + fmt(n.fields.strategy) + " \u00b7 " + fmt(n.fields.mutation) }));
    var metrics = Object.keys(n.metrics).map(function (k) { return [k, n.metrics[k]]; });
    pane.appendChild(section("Metrics", "metrics", keyValueTable("metrics-table", metrics)));
    pane.appendChild(section("Config diff" + (n.diff_parent === null ? "" : " against node " + n.diff_parent), "config", configDiff(n)));
    pane.appendChild(section("Code diff", "code", codeDiff(n.code_diff)));
    pane.appendChild(section("Agent log entry and decision", "agent", agentPart(n)));
    pane.appendChild(section("Plots", "plots-section", plots(n)));
    pane.appendChild(section("Working memory", "memory-section", memory(n)));
  }

  function select(id) {
    if (!(id in byId)) { return; }
    selected = id;
    Array.prototype.forEach.call(document.querySelectorAll(".selected"), function (e) { e.classList.remove("selected"); });
    Array.prototype.forEach.call(document.querySelectorAll('[data-id="' + id + '"]'), function (e) { e.classList.add("selected"); });
    renderDetails(byId[id]);
    try { history.replaceState(null, "", "#node-" + id); } catch (err) { /* file: URLs may refuse; harmless */ }
  }

  // ------------------------------------------------------------------ page

  function showView(which) {
    document.getElementById("tree-view").hidden = which !== "tree";
    document.getElementById("table-view").hidden = which !== "table";
    document.getElementById("show-tree").classList.toggle("active", which === "tree");
    document.getElementById("show-table").classList.toggle("active", which === "table");
  }

  function build() {
    document.body.appendChild(header());
    var treeView = el("div", { id: "tree-view" }, DATA.blocks.map(blockTree));
    var tableView = el("div", { id: "table-view" });
    tableView.hidden = true;
    var details = el("aside", { id: "details" }, [el("p", { cls: "note", text: "Click a node (tree or table) to see its metrics, config and code diff, the agent's log entry, plots and memory." })]);
    document.body.appendChild(el("main", {}, [el("div", { id: "views" }, [treeView, tableView]), details]));
    renderTable(tableView);
    document.getElementById("show-tree").addEventListener("click", function () { showView("tree"); });
    document.getElementById("show-table").addEventListener("click", function () { showView("table"); });
    var match = /^#node-(-?\d+)$/.exec(location.hash);
    if (match) { select(Number(match[1])); }
    document.documentElement.setAttribute("data-render-ms", String(Math.round(performance.now())));
  }

  build();
})();
