/* sitegen atlas: the search box of the top bar (issue 15, item 8). No server and no fetch(): on first
   focus it adds a <script> for assets/search-index.js (written by sitegen.render.search), which sets
   window.SITEGEN_SEARCH; that works from file:// too, where Chromium refuses fetch() of a JSON file.
   Queries: "conv3/17" or "conv3 17" (that unit in every network), "alexnet conv3/17", "fc7" (layers),
   a network or checkpoint name, a class name (substring, any case), "units preferring cat",
   "dead units in fc7", "rare conv2", "dead". Keys: / focuses, ↑/↓ move, Enter opens, Esc closes.
   Every string of the index goes into the page as text (textContent), never as markup. */
(function () {
  "use strict";

  var MAX = 40;            /* rows shown */
  var PER_LAYER = 12;      /* flagged or preferring units listed per layer */
  var STOP = {
    "unit": 1, "units": 1, "in": 1, "of": 1, "the": 1, "layer": 1, "layers": 1, "firing": 1, "fire": 1,
    "fires": 1, "that": 1, "which": 1, "for": 1, "at": 1, "on": 1, "network": 1, "class": 1, "and": 1,
    "or": 1, "all": 1, "show": 1, "find": 1, "me": 1, "with": 1, "to": 1, "a": 1
  };
  var PREFER = /^(prefer|prefers|preferring|preferred|like|likes|liking|loves?)$/;

  var ix = null;           /* the prepared index */
  var state = { rows: [], active: -1, loading: false };
  var els = {};

  function pad(u) { var s = String(u); while (s.length < 4) { s = "0" + s; } return s; }

  /* The raw arrays of search-index.js, as objects with lower-case names for matching. */
  function prepare(raw) {
    var out = { datasets: [], nets: [], cks: [], layers: [], pages: [], names: {} };
    raw.datasets.forEach(function (d) {
      out.datasets.push({ name: d[0], classes: d[1].map(function (c, i) {
        return { index: i, name: c, lname: c.toLowerCase(), href: d[2][i] || "", ds: d[0] };
      }) });
    });
    raw.nets.forEach(function (n) { out.nets.push({ name: n[0], lname: n[0].toLowerCase(), ds: n[1] }); });
    raw.cks.forEach(function (c) {
      out.cks.push({ net: c[0], name: c[1], lname: c[1].toLowerCase(), href: c[2], stable: c[3] === 1 });
    });
    raw.layers.forEach(function (l) {
      var units = typeof l[3] === "number" ? range(l[3]) : l[3];
      var pos = {};
      var byClass = {};  /* dominant class -> positions of its units (class queries scan no units) */
      units.forEach(function (u, i) {
        pos[u] = i;
        (byClass[l[4][i]] = byClass[l[4][i]] || []).push(i);
      });
      var ck = out.cks[l[0]];
      out.layers.push({
        ck: l[0], net: ck.net, name: l[1], lname: l[1].toLowerCase(), href: l[2],
        folder: l[2].replace(/[^\/]*$/, ""), units: units, pos: pos, byClass: byClass, dominant: l[4], purity: l[5],
        dead: l[6], rare: l[7], output: l[8] === 1
      });
    });
    raw.pages.forEach(function (p) { out.pages.push({ kind: p[0], title: p[1], ltitle: p[1].toLowerCase(), href: p[2] }); });
    out.nets.forEach(function (n) { out.names[n.lname] = "net"; });
    out.layers.forEach(function (l) { if (!out.names[l.lname]) { out.names[l.lname] = "layer"; } });
    out.cks.forEach(function (c) { if (!out.names[c.lname]) { out.names[c.lname] = "ck"; } });
    return out;
  }

  function range(n) { var a = []; for (var i = 0; i < n; i += 1) { a.push(i); } return a; }

  /* A query's parts: networks, checkpoints, layers, unit numbers, flags, and the words left (text). */
  function parse(query) {
    var q = { nets: [], cks: [], layers: [], units: [], text: [], loose: [], dead: false, rare: false, prefer: false };
    query.toLowerCase().split(/\s+/).forEach(function (w) {
      if (!w) { return; }
      if (w === "dead") { q.dead = true; return; }
      if (/^rare(ly)?$/.test(w)) { q.rare = true; return; }
      if (w === "quiet") { q.dead = q.rare = true; return; }
      if (PREFER.test(w)) { q.prefer = true; return; }
      q.loose.push(w);
      if (STOP[w]) { return; }
      /* "alexnet/conv3/17", "conv3#17", "alexnet@epoch-1": every piece must be a known name or a number */
      var pieces = ix.names[w] ? [w] : w.split(/[\/#:@]/).filter(function (p) { return p; });  /* a name with "/" */
      var kinds = pieces.map(kindOf);
      if (pieces.length > 1 && kinds.indexOf("") !== -1) { kinds = [""]; pieces = [w]; }
      pieces.forEach(function (p, i) {
        var k = kinds[i];
        if (k === "unit") { q.units.push(Number(p)); q.text.push(p); }
        else if (k === "net") { q.nets.push(p); }
        else if (k === "netpart") { ix.nets.forEach(function (n) { if (n.lname.indexOf(p) !== -1) { q.nets.push(n.lname); } }); }
        else if (k === "layer") { q.layers.push(p); }
        else if (k === "ck") { q.cks.push(p); }
        else { q.text.push(p); }
      });
    });
    return q;
  }

  /* A piece of a query word: a unit number, a network, layer or checkpoint name, or part of a
     network's name ("alex" for "alexnet", three letters at least); "" for anything else. */
  function kindOf(p) {
    if (/^\d+$/.test(p)) { return "unit"; }
    if (ix.names[p]) { return ix.names[p]; }
    var part = p.length >= 3 && ix.nets.some(function (n) { return n.lname.indexOf(p) !== -1; });
    return part ? "netpart" : "";
  }

  function has(list, x) { return list.indexOf(x) !== -1; }
  function netOf(l) { return ix.nets[l.net]; }
  function classesOf(l) { var d = ix.datasets[netOf(l).ds]; return d ? d.classes : []; }
  function where(l) { var ck = ix.cks[l.ck]; return netOf(l).name + (ck.stable ? "" : " @ " + ck.name) + " " + l.name; }
  function unitHref(l, u) { return l.folder + "unit-" + pad(u) + ".html"; }
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  /* Layers the query's network, checkpoint and layer names allow; other checkpoints than the stable
     one only when a checkpoint is named. */
  function layersFor(q) {
    return ix.layers.filter(function (l) {
      var ck = ix.cks[l.ck];
      if (q.cks.length ? !has(q.cks, ck.lname) : !ck.stable) { return false; }
      if (q.nets.length && !has(q.nets, netOf(l).lname)) { return false; }
      return !q.layers.length || has(q.layers, l.lname);
    });
  }

  function unitNote(l, u) {
    var i = l.pos[u];
    var names = classesOf(l);
    var parts = [l.output && names[u] ? "output of class " + names[u].name : ""];
    if (i !== undefined && names[l.dominant[i]]) {
      parts.push("prefers " + names[l.dominant[i]].name + " (" + l.purity[i] + "% of top images)");
    }
    parts.push(l.dead && has(l.dead, u) ? "dead" : l.rare && has(l.rare, u) ? "rarely firing" : "");
    return parts.filter(Boolean).join(" · ");
  }

  function unitRow(l, u, score, note) {
    var shown = l.pos[u] !== undefined;
    return {
      kind: "unit", score: score, text: where(l) + "/" + u,
      note: [note || unitNote(l, u), shown ? "" : "no unit page: its layer"].filter(Boolean).join(" · "),
      href: shown ? unitHref(l, u) : l.href
    };
  }

  function flagRows(q, rows) {
    var which = q.dead && q.rare ? "quiet" : q.dead ? "dead" : "rare";
    var any = false;
    layersFor(q).forEach(function (l, li) {
      if (l.dead === null) { return; }
      any = true;
      /* units with a page first, each group in unit order */
      var list = (q.dead ? l.dead : []).concat(q.rare ? l.rare : []).sort(function (a, b) {
        return (l.pos[a] === undefined) - (l.pos[b] === undefined) || a - b;
      });
      if (!list.length) { return; }
      var what = which === "dead" ? "dead unit" : which === "rare" ? "rarely firing unit" : "dead or rarely firing unit";
      /* the layer grid filtered to them when they all have pages, else the layer's distribution
         section, which lists every one of them */
      var all = list.every(function (u) { return l.pos[u] !== undefined; });
      rows.push({ kind: "layer", score: 90, text: where(l), note: plural(list.length, what, what + "s"),
                  href: l.href + (all ? "#flag=" + which : "#distribution") });
      list.slice(0, PER_LAYER).forEach(function (u, i) {
        var row = unitRow(l, u, 80 - li / 100 - i / 10000);  /* the layers' rows first, then each one's units */
        if (row.href === l.href) { row.href = l.href + "#distribution"; }
        rows.push(row);
      });
    });
    return any;
  }

  function classScore(c, texts) {
    var best = 0;
    texts.forEach(function (t) {
      if (!t) { return; }
      var i = c.lname.indexOf(t);
      var s = i === -1 ? 0 : c.lname === t ? 92 : i === 0 ? 82 : 72;
      if (s) { best = Math.max(best, s - Math.min(9, (c.lname.length - t.length) / 10)); }
    });
    return best;
  }

  /* A class: its page (or, without class pages, the dataset's card on the index page), its output
     units, and per layer the units whose top images it dominates (the layer grid filtered by it). */
  function classRows(q, texts, rows) {
    var found = [];
    ix.datasets.forEach(function (d, di) {
      if (q.nets.length && !ix.nets.some(function (n) { return n.ds === di && has(q.nets, n.lname); })) { return; }
      d.classes.forEach(function (c) {
        var s = classScore(c, texts);
        if (s) { found.push({ c: c, ds: di, score: s }); }
      });
    });
    found.sort(function (a, b) { return b.score - a.score; });
    var layers = layersFor(q);
    found.forEach(function (f, rank) {
      var c = f.c;
      var per = [];
      layers.forEach(function (l) {
        if (netOf(l).ds !== f.ds) { return; }
        var mine = l.byClass[c.index];
        if (mine) { per.push({ l: l, idx: mine.slice() }); }
      });
      var total = per.reduce(function (n, p) { return n + p.idx.length; }, 0);
      rows.push({ kind: c.href ? "class page" : "class", score: f.score, text: c.name,
                  note: ix.datasets[f.ds].name + " · " + plural(total, "unit prefers it", "units prefer it") +
                        (c.href ? "" : " · its exemplars on the atlas index"),
                  href: c.href || "index.html#dataset-" + encodeURIComponent(c.ds) });
      if (rank >= 3 && !q.prefer) { return; }
      layers.forEach(function (l) {
        if (l.output && netOf(l).ds === f.ds && l.pos[c.index] !== undefined) {
          rows.push(unitRow(l, c.index, f.score - 4, "output unit of " + c.name));
        }
      });
      per.sort(function (a, b) { return b.idx.length - a.idx.length; });
      per.forEach(function (p) {
        rows.push({ kind: "layer", score: f.score - 10 + Math.min(5, p.idx.length / 20), text: where(p.l),
                    note: plural(p.idx.length, "unit prefers ", "units prefer ") + c.name,
                    href: p.l.href + "#class=" + encodeURIComponent(c.name) });
        if (!q.prefer) { return; }
        p.idx.sort(function (a, b) { return p.l.purity[b] - p.l.purity[a]; });
        p.idx.slice(0, PER_LAYER).forEach(function (i) {
          rows.push(unitRow(p.l, p.l.units[i], f.score - 20 + p.l.purity[i] / 1000));
        });
      });
    });
  }

  function nameRows(q, t, rows) {
    /* a unit, layer or checkpoint asked for, or words left that name none: the network comes after */
    var narrow = q.units.length || q.layers.length || q.cks.length || t;
    ix.nets.forEach(function (n, ni) {
      var hit = has(q.nets, n.lname) || (t && n.lname.indexOf(t) !== -1);
      if (!hit) { return; }
      ix.cks.forEach(function (c) {
        if (c.net !== ni) { return; }
        if (c.stable) {
          rows.push({ kind: "network", score: narrow ? 40 : has(q.nets, n.lname) ? 95 : 85, text: n.name,
                      note: "dataset " + (ix.datasets[n.ds] ? ix.datasets[n.ds].name : "?"), href: c.href });
        } else {
          rows.push({ kind: "checkpoint", score: narrow ? 35 : 60, text: n.name + " @ " + c.name, note: "atlas of an earlier checkpoint", href: c.href });
        }
      });
    });
    ix.cks.forEach(function (c) {
      if (q.nets.length && !has(q.nets, ix.nets[c.net].lname)) { return; }
      var named = has(q.cks, c.lname);
      if (named || (t && c.lname.indexOf(t) !== -1 && !c.stable)) {
        rows.push({ kind: "checkpoint", score: named && !q.units.length && !q.layers.length ? 92 : narrow ? 45 : 88, text: ix.nets[c.net].name + " @ " + c.name,
                    note: c.stable ? "the network's atlas (its last checkpoint)" : "atlas of an earlier checkpoint", href: c.href });
      }
    });
    layersFor(q).forEach(function (l) {
      var named = q.layers.length > 0, prefix = t && l.lname.indexOf(t) === 0;
      if (named || prefix || ((q.nets.length || q.cks.length) && !t && !q.units.length)) {
        rows.push({ kind: "layer", score: named ? 90 : prefix ? 66 : 58, text: where(l),
                    note: plural(l.units.length, "unit page", "unit pages"), href: l.href });
      }
    });
    if (t) {
      /* other pages by title: every word, and every name the query gave ("evolution conv2", "diff vgg") */
      var words = t.split(" ").concat(q.nets, q.layers, q.cks);
      ix.pages.forEach(function (p) {
        if (words.every(function (w) { return p.ltitle.indexOf(w) !== -1; })) {
          rows.push({ kind: p.kind, score: q.nets.length + q.layers.length ? 68 : 55, text: p.title, note: "", href: p.href });
        }
      });
    }
  }

  function search(query) {
    var q = parse(query);
    var rows = [];
    var t = q.text.join(" ");
    var message = "";
    if (q.dead || q.rare) {
      if (!flagRows(q, rows)) { message = "No activation distribution (density) for these layers in this atlas."; }
      else if (!rows.length) { message = "No " + (q.dead ? "dead" : "") + (q.dead && q.rare ? " or " : "") + (q.rare ? "rarely firing" : "") + " units in these layers."; }
    } else if (q.units.length && (q.layers.length || q.nets.length || q.cks.length || q.text.length === q.units.length)) {
      layersFor(q).forEach(function (l) {
        q.units.forEach(function (u) {
          if (l.pos[u] !== undefined) { rows.push(unitRow(l, u, q.layers.length ? 100 : 75)); }
          else if (q.layers.length) { rows.push({ kind: "layer", score: 92, text: where(l), note: "unit " + u + " has no page here", href: l.href }); }
        });
      });
    }
    if (!q.dead && !q.rare) {
      /* "conv3/17", "alexnet 17": the number is a unit, not part of a class name */
      var named = q.layers.length || q.nets.length || q.cks.length;
      var words = q.text.filter(function (w) { return !(named && /^\d+$/.test(w)); });
      nameRows(q, q.units.length ? "" : t, rows);
      classRows(q, [words.join(" "), q.loose.join(" ")], rows);
    }
    /* best first (ties in the order found); a target found twice keeps its best row */
    rows.forEach(function (r, i) { r.order = i; });
    rows.sort(function (a, b) { return b.score - a.score || a.order - b.order; });
    var seen = {};
    rows = rows.filter(function (r) {
      var key = r.href + "|" + r.text;
      if (seen[key]) { return false; }
      seen[key] = 1;
      return true;
    });
    return { rows: rows, message: message };
  }

  // --- the combobox ---------------------------------------------------------------------------------

  function status(text) { els.status.textContent = text; }

  function close() {
    els.list.hidden = true;
    els.input.setAttribute("aria-expanded", "false");
    els.input.removeAttribute("aria-activedescendant");
    state.active = -1;
  }

  function setActive(i) {
    var items = els.list.children;
    if (state.active >= 0 && items[state.active]) { items[state.active].setAttribute("aria-selected", "false"); }
    state.active = i;
    if (i < 0 || !items[i]) { els.input.removeAttribute("aria-activedescendant"); return; }
    items[i].setAttribute("aria-selected", "true");
    els.input.setAttribute("aria-activedescendant", items[i].id);
    if (items[i].scrollIntoView) { items[i].scrollIntoView({ block: "nearest" }); }
  }

  function open(i) {
    var row = state.rows[i];
    if (!row) { return; }
    close();
    window.location.href = els.root + row.href;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function draw() {
    var query = els.input.value.trim();
    els.list.textContent = "";
    state.rows = [];
    state.active = -1;
    if (!query) { close(); status(""); return; }
    if (!ix) { status("Loading the search index…"); return; }
    var found = search(query);
    state.rows = found.rows.slice(0, MAX);
    state.rows.forEach(function (r, i) {
      var li = document.createElement("li");
      li.id = "search-opt-" + i;
      li.className = "search-item";
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      li.appendChild(span("search-kind", r.kind));
      li.appendChild(span("search-text", r.text));
      if (r.note) { li.appendChild(span("search-note", r.note)); }
      li.addEventListener("mousedown", function (e) { e.preventDefault(); });  /* keep focus in the box */
      li.addEventListener("click", function () { open(i); });
      li.addEventListener("mousemove", function () { if (state.active !== i) { setActive(i); } });
      els.list.appendChild(li);
    });
    if (!state.rows.length) {
      var li = document.createElement("li");
      li.className = "search-empty";
      li.setAttribute("role", "option");
      li.setAttribute("aria-disabled", "true");
      li.textContent = found.message || "No match. Try conv3/17, fc7, a class name, or dead fc7.";
      els.list.appendChild(li);
    }
    els.list.hidden = false;
    els.input.setAttribute("aria-expanded", "true");
    var n = found.rows.length;
    status(n ? plural(n, "result", "results") + (n > MAX ? ", the first " + MAX + " shown" : "") : els.list.textContent);
  }

  function load() {
    if (ix || state.loading) { return; }
    if (window.SITEGEN_SEARCH) { ix = prepare(window.SITEGEN_SEARCH); draw(); return; }
    state.loading = true;
    var script = document.createElement("script");
    script.src = els.root + "assets/search-index.js";
    script.charset = "utf-8";
    script.onload = function () {
      if (!window.SITEGEN_SEARCH) { status("The search index is empty."); return; }
      ix = prepare(window.SITEGEN_SEARCH);
      draw();
    };
    script.onerror = function () { state.loading = false; status("The search index (assets/search-index.js) did not load."); };
    document.head.appendChild(script);
  }

  function onKey(e) {
    var n = state.rows.length;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (els.list.hidden) { draw(); return; }
      if (!n) { return; }
      var step = e.key === "ArrowDown" ? 1 : -1;
      setActive(state.active < 0 ? (step > 0 ? 0 : n - 1) : (state.active + step + n) % n);
    } else if (e.key === "Enter") {
      e.preventDefault();
      if (n) { open(state.active >= 0 ? state.active : 0); }
    } else if (e.key === "Escape") {
      e.preventDefault();
      if (!els.list.hidden) { close(); } else if (els.input.value) { els.input.value = ""; status(""); } else { els.input.blur(); }
    }
  }

  function hidden(id, text) {
    var s = span("sr-only", text);
    s.id = id;
    return s;
  }

  function setup() {
    els.form = document.getElementById("site-search");
    if (!els.form) { return; }
    els.input = document.getElementById("search-input");
    els.list = document.getElementById("search-list");
    els.root = els.form.getAttribute("data-root") || "";
    /* the box's description and live status (made here: a page without scripts has no use for them) */
    els.status = hidden("search-status", "");
    els.status.setAttribute("role", "status");
    els.status.setAttribute("aria-live", "polite");
    els.form.appendChild(hidden("search-help", "Units as conv3/17 or alexnet conv3 17, layers, networks, " +
      "class names, or dead or rare units of a layer. Up and down arrows choose, Enter opens, Escape closes."));
    els.form.appendChild(els.status);
    els.input.setAttribute("aria-describedby", "search-help");
    /* a phone shows the box beside the presentation toggle: the examples would be cut off */
    if (window.matchMedia && window.matchMedia("(max-width: 720px)").matches) { els.input.placeholder = "Search the atlas"; }
    els.form.addEventListener("submit", function (e) { e.preventDefault(); });
    els.input.addEventListener("focus", function () { load(); if (els.input.value.trim()) { draw(); } });
    els.input.addEventListener("input", draw);
    els.input.addEventListener("keydown", onKey);
    els.input.addEventListener("blur", close);
    document.addEventListener("keydown", function (e) {
      if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || e.defaultPrevented) { return; }
      var t = e.target;
      if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) { return; }
      if (document.documentElement.classList.contains("lb-open")) { return; }
      e.preventDefault();
      els.input.focus();
      els.input.select();
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }
}());
