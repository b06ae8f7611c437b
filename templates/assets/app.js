/* sitegen atlas: draws the Plotly figures (and swaps them on <select>), sorts/filters unit tiles,
   maps ←/→ to prev/next unit, enlarges any image in a lightbox and keeps presentation mode.
   Plain ES5-compatible JavaScript, no framework, no network: it must work from file:// too. */
(function () {
  "use strict";

  /* Where app.js was loaded from: plotly.min.js sits beside it (see ensurePlotly). */
  var APP_SRC = (document.currentScript && document.currentScript.src) || "";

  var PLOTLY_CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
  };

  /* Presentation mode (issue 14): larger type, images and charts for a projector. On with `?present`
     in the URL or the top bar's toggle, off with `?present=0` or the toggle; the choice sticks in
     localStorage. The <head> sets the class before the first paint; this keeps it and the button in step. */
  var PRESENT_KEY = "sitegen-present";
  var FONT_SCALE = 1.35;
  var HEIGHT_SCALE = 1.25;

  function isPresent() { return document.documentElement.classList.contains("present"); }

  function setPresent(on) {
    document.documentElement.classList.toggle("present", on);
    try { window.localStorage.setItem(PRESENT_KEY, on ? "1" : "0"); } catch (e) { /* private mode */ }
    var button = document.getElementById("present-toggle");
    if (button) { button.setAttribute("aria-pressed", on ? "true" : "false"); }
    redrawFigures();
  }

  function setupPresent() {
    var button = document.getElementById("present-toggle");
    if (!button) { return; }
    button.setAttribute("aria-pressed", isPresent() ? "true" : "false");
    button.addEventListener("click", function () { setPresent(!isPresent()); });
  }

  /* A copy of a figure with every font size (and marker size) scaled: Plotly sizes are px, not rem. */
  function scaled(value, factor, key) {
    if (Array.isArray(value)) {
      return value.map(function (v) { return scaled(v, factor, key); });
    }
    if (value && typeof value === "object") {
      var out = {};
      Object.keys(value).forEach(function (k) {
        var v = value[k];
        if (k === "size" && typeof v === "number" && /font$|^marker$/.test(key || "")) {
          out[k] = Math.round(v * factor * 10) / 10;
        } else {
          out[k] = scaled(v, factor, k);
        }
      });
      return out;
    }
    return value;
  }

  /* Issue 13 (site size): a figure naming a shared layout ({"shared": "activation"}) carries only what
     its layout adds; render puts every shared layout once at the top of this file (SITEGEN_LAYOUTS).
     Objects merge key by key, anything else replaces (charts.shared.merge does the same). */
  function mergeLayout(target, extra) {
    Object.keys(extra).forEach(function (k) {
      var v = extra[k], t = target[k];
      if (v && typeof v === "object" && !Array.isArray(v) && t && typeof t === "object" && !Array.isArray(t)) {
        mergeLayout(t, v);
      } else {
        target[k] = v;
      }
    });
    return target;
  }

  function sharedLayout(fig) {
    var layouts = window.SITEGEN_LAYOUTS || {};
    if (!fig.shared) { return fig.layout || {}; }
    return mergeLayout(JSON.parse(JSON.stringify(layouts[fig.shared] || {})), fig.layout || {});
  }

  function figureFor(div, source) {
    var fig = JSON.parse(source.textContent);
    fig.layout = sharedLayout(fig);
    var base = Number(div.getAttribute("data-height")) || fig.layout.height || 300;
    if (isPresent()) {
      fig = { data: scaled(fig.data, FONT_SCALE), layout: scaled(fig.layout, FONT_SCALE) };
      fig.layout.height = Math.round(base * HEIGHT_SCALE);
    } else {
      fig.layout.height = base;
    }
    div.style.height = fig.layout.height + "px";
    /* Heatmap values written in the cells (meta.cellText: CKA) are dropped where a cell is too narrow. */
    fig.data.forEach(function (t) {
      if (t.meta && t.meta.cellText && div.clientWidth / Math.max(1, (t.x || []).length) < 44) {
        delete t.texttemplate;
      }
    });
    return fig;
  }

  /* Each <div data-figure="ID-data"> names a <script type="application/json"> holding {data, layout}. */
  function drawFigures() {
    if (!window.Plotly) { return; }
    var divs = document.querySelectorAll("[data-figure]");
    Array.prototype.forEach.call(divs, function (div) {
      var source = document.getElementById(div.getAttribute("data-figure"));
      if (!source) { return; }
      var fig = figureFor(div, source);
      window.Plotly.newPlot(div, fig.data, fig.layout, PLOTLY_CONFIG);
    });
  }

  /* Pages the view planned without charts (unit pages) may still get one from an analysis section
     (issue 15: the activation histogram): load the vendored plotly.min.js beside app.js, then draw. */
  function ensurePlotly(done) {
    if (window.Plotly || !APP_SRC || !document.querySelector("[data-figure]")) { done(); return; }
    var script = document.createElement("script");
    script.src = APP_SRC.replace(/app\.js(\?.*)?$/, "plotly.min.js");
    script.onload = done;
    document.head.appendChild(script);
  }

  function redrawFigures() {
    if (!window.Plotly) { return; }
    Array.prototype.forEach.call(document.querySelectorAll("[data-figure]"), function (div) {
      var source = document.getElementById(div.getAttribute("data-figure"));
      if (!source || !div.classList.contains("js-plotly-plot")) { return; }
      var fig = figureFor(div, source);
      window.Plotly.react(div, fig.data, fig.layout, PLOTLY_CONFIG);
    });
  }

  /* A <select data-figure-select="DIV-ID"> swaps the figure drawn in that div: each option's value
     names another JSON figure script (diff pages: the class preference of the chosen layer). */
  function setupFigureSelects() {
    var selects = document.querySelectorAll("select[data-figure-select]");
    Array.prototype.forEach.call(selects, function (select) {
      /* The browser may restore a previous choice on reload: draw that one from the start. */
      var target = document.getElementById(select.getAttribute("data-figure-select"));
      if (target && document.getElementById(select.value)) { target.setAttribute("data-figure", select.value); }
      select.addEventListener("change", function () {
        var div = document.getElementById(select.getAttribute("data-figure-select"));
        var source = document.getElementById(select.value);
        if (!div || !source || !window.Plotly) { return; }
        div.setAttribute("data-figure", select.value);
        var fig = figureFor(div, source);
        window.Plotly.react(div, fig.data, fig.layout, PLOTLY_CONFIG);
        /* the chart's accessible name and text alternative follow the choice */
        if (source.getAttribute("data-label")) { div.setAttribute("aria-label", source.getAttribute("data-label")); }
        var desc = document.getElementById(div.getAttribute("aria-describedby") || "");
        if (desc && source.getAttribute("data-description")) { desc.textContent = source.getAttribute("data-description"); }
      });
    });
  }

  /* Scores missing on a tile (NaN: not computed for its layer) sort last, whatever the direction. */
  function byScore(key, desc) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (isNaN(x) || isNaN(y)) { return (isNaN(x) ? 1 : 0) - (isNaN(y) ? 1 : 0) || a.unit - b.unit; }
      return (desc ? y - x : x - y) || a.unit - b.unit;
    };
  }

  var SORTS = {
    "unit": function (a, b) { return a.unit - b.unit; },
    "purity": function (a, b) { return b.purity - a.purity || a.unit - b.unit; },
    "purity-asc": function (a, b) { return a.purity - b.purity || a.unit - b.unit; },
    "class": function (a, b) {
      return a.klass < b.klass ? -1 : a.klass > b.klass ? 1 : b.purity - a.purity || a.unit - b.unit;
    },
    /* issue 15: the distribution scores */
    "selectivity": byScore("selectivity", true),
    "selectivity-asc": byScore("selectivity", false),
    "entropy": byScore("entropy", false),
    "entropy-desc": byScore("entropy", true),
    "density": byScore("density", true),
    "density-asc": byScore("density", false),
    /* issue 15 (5): direct effect (max W x mean) or ablation logit drop */
    "effect": byScore("effect", true)
  };

  var SCORE_TEXT = {
    "selectivity": function (v) { return isNaN(v) ? "sel –" : "sel " + v.toFixed(2); },
    "entropy": function (v) { return isNaN(v) ? "H –" : "H " + v.toFixed(2); },
    "density": function (v) { return isNaN(v) ? "–" : (v * 100).toFixed(v < 0.1 ? 1 : 0) + "% fire"; },
    "effect": function (v) { return isNaN(v) ? "eff –" : "eff " + v.toPrecision(3); }
  };

  function score(el, name) {
    var v = el.getAttribute("data-" + name);
    return v === null || v === "" ? NaN : Number(v);
  }

  /* The grid's state as a URL hash, "#sort=selectivity&class=circle&purity=50&flag=dead", so a view can
     be shared; anchors without "=" (#units, #preference) are left alone. */
  function readHash() {
    var h = window.location.hash.replace(/^#/, "");
    if (h.indexOf("=") === -1) { return null; }
    var out = {};
    h.split("&").forEach(function (part) {
      var i = part.indexOf("=");
      if (i > 0) {
        try { out[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1).replace(/\+/g, " ")); }
        catch (e) { /* a malformed escape: ignore that part */ }
      }
    });
    return out;
  }

  function hasOption(select, value) {
    return Array.prototype.some.call(select.options, function (o) { return o.value === value; });
  }

  /* Layer pages: tiles carry data-unit, data-purity, data-class (and, with the activation distribution,
     data-selectivity, data-entropy, data-density, data-flag); the controls reorder and hide them. */
  function setupTiles() {
    var grid = document.getElementById("tiles");
    var form = document.getElementById("tile-controls");
    if (!grid || !form) { return; }
    var sort = document.getElementById("tile-sort");
    var filter = document.getElementById("tile-filter");
    var purity = document.getElementById("tile-purity");
    var purityOut = document.getElementById("tile-purity-out");
    var flag = document.getElementById("tile-flag");
    var share = document.getElementById("tile-share");
    var count = document.getElementById("tile-count");
    var empty = document.getElementById("tile-empty");
    var tiles = Array.prototype.map.call(grid.children, function (el) {
      return {
        el: el,
        unit: Number(el.getAttribute("data-unit")),
        purity: Number(el.getAttribute("data-purity")),
        klass: (el.getAttribute("data-class") || "").toLowerCase(),
        selectivity: score(el, "selectivity"),
        entropy: score(el, "entropy"),
        density: score(el, "density"),
        effect: score(el, "effect"),
        flag: el.getAttribute("data-flag") || ""
      };
    });

    function matches(t, query, minPurity, which) {
      if (t.purity + 1e-9 < minPurity) { return false; }
      if (which === "quiet" ? !t.flag : which && t.flag !== which) { return false; }
      if (!query) { return true; }
      var number = query.replace(/^#/, "");
      if (/^\d+$/.test(number) && t.unit === Number(number)) { return true; }
      return t.klass.indexOf(query) !== -1;
    }

    function state() {
      var parts = [];
      if (sort.value !== "unit") { parts.push("sort=" + encodeURIComponent(sort.value)); }
      if (filter.value.trim()) { parts.push("class=" + encodeURIComponent(filter.value.trim())); }
      if (purity.value !== "0") { parts.push("purity=" + encodeURIComponent(purity.value)); }
      if (flag && flag.value) { parts.push("flag=" + encodeURIComponent(flag.value)); }
      return parts.join("&");
    }

    function restore() {
      var h = readHash();
      if (!h) { return false; }
      sort.value = h.sort && hasOption(sort, h.sort) ? h.sort : "unit";
      filter.value = h["class"] || "";
      purity.value = /^\d+$/.test(h.purity || "") ? h.purity : "0";
      if (flag) { flag.value = h.flag && hasOption(flag, h.flag) ? h.flag : ""; }
      return true;
    }

    function apply() {
      var query = filter.value.trim().toLowerCase();
      var minPurity = Number(purity.value) / 100;
      var which = flag ? flag.value : "";
      purityOut.textContent = purity.value + "%";
      var order = tiles.slice().sort(SORTS[sort.value] || SORTS.unit);
      var shown = 0;
      var frag = document.createDocumentFragment();
      order.forEach(function (t) {
        var ok = matches(t, query, minPurity, which);
        t.el.hidden = !ok;
        if (ok) { shown += 1; }
        frag.appendChild(t.el);
      });
      grid.appendChild(frag);
      /* a score sort shows that score on each tile (purity is always shown) */
      var key = sort.value.replace(/-(asc|desc)$/, "");
      tiles.forEach(function (t) {
        var slot = t.el.querySelector(".tsc");
        if (!slot) { return; }
        var fmt = SCORE_TEXT[key];
        slot.hidden = !fmt;
        slot.textContent = fmt ? fmt(t[key]) : "";
      });
      count.textContent = shown === tiles.length ? tiles.length + " units" : shown + " of " + tiles.length + " units";
      empty.hidden = shown !== 0;
    }

    /* A user's change goes into the hash (replaceState: no history entry per keystroke). */
    function changed() {
      apply();
      var h = state();
      var url = window.location.pathname + window.location.search + (h ? "#" + h : "");
      if (readHash() || h) {
        try { window.history.replaceState(null, "", url); } catch (e) { window.location.hash = h; }
      }
    }

    form.addEventListener("submit", function (e) { e.preventDefault(); });
    sort.addEventListener("change", changed);
    filter.addEventListener("input", changed);
    purity.addEventListener("input", changed);
    if (flag) { flag.addEventListener("change", changed); }
    if (share) {
      share.addEventListener("click", function () {
        var done = function () { share.textContent = "Link copied"; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(window.location.href).then(done, function () { window.prompt("Link:", window.location.href); });
        } else {
          window.prompt("Link:", window.location.href);
        }
      });
    }
    window.addEventListener("hashchange", function () { if (restore()) { apply(); } });
    restore();
    apply();
  }

  /* Unit pages: ←/→ follow the links marked data-key, unless the user is typing or the lightbox is open. */
  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) { return; }
      if (document.documentElement.classList.contains("lb-open")) { return; }
      var target = e.target;
      if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) { return; }
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") { return; }
      var link = document.querySelector('a[data-key="' + e.key + '"]');
      if (link) {
        e.preventDefault();
        window.location.href = link.href;
      }
    });
  }

  /* Lightbox (issue 14): every image of the page enlarges. An image outside a link opens on click
     (or Enter / Space: it is focusable); an image inside a link keeps the link and gets a zoom button
     beside it. In the dialog: Esc or the close button closes, ←/→ (and the buttons) move through the
     images of the same section, Tab stays inside, and focus returns to where it came from. */
  var lb = null;

  function zoomSource(el) {
    if (el.tagName === "IMG") {
      return { img: el.currentSrc || el.src, w: el.naturalWidth || el.width, h: el.naturalHeight || el.height,
               alt: el.getAttribute("alt") || "", px: el.classList.contains("px") || (el.naturalWidth || 999) < 160 };
    }
    var cs = window.getComputedStyle(el);
    var r = el.getBoundingClientRect();
    return { bg: cs.backgroundImage, size: cs.backgroundSize, pos: cs.backgroundPosition,
             w: r.width || 1, h: r.height || 1, alt: el.getAttribute("aria-label") || "", px: true };
  }

  function buildLightbox() {
    var box = document.createElement("div");
    box.className = "lightbox";
    box.id = "lightbox";
    box.hidden = true;
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "true");
    box.setAttribute("aria-labelledby", "lb-cap");
    box.innerHTML = '<figure class="lb-fig"><div class="lb-stage"></div><figcaption id="lb-cap" aria-live="polite"></figcaption></figure>' +
      '<button type="button" class="lb-btn lb-prev" aria-label="Previous image (←)">‹</button>' +
      '<button type="button" class="lb-btn lb-next" aria-label="Next image (→)">›</button>' +
      '<button type="button" class="lb-btn lb-close" aria-label="Close (Esc)">×</button>';
    document.body.appendChild(box);
    var state = { box: box, items: [], index: 0, opener: null };
    box.querySelector(".lb-close").addEventListener("click", function () { closeLightbox(); });
    box.querySelector(".lb-prev").addEventListener("click", function () { step(-1); });
    box.querySelector(".lb-next").addEventListener("click", function () { step(1); });
    box.addEventListener("click", function (e) { if (e.target === box) { closeLightbox(); } });
    box.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); closeLightbox(); }
      else if (e.key === "ArrowLeft") { e.preventDefault(); step(-1); }
      else if (e.key === "ArrowRight") { e.preventDefault(); step(1); }
      else if (e.key === "Tab") {
        var buttons = Array.prototype.filter.call(box.querySelectorAll("button"), function (b) { return !b.hidden; });
        var i = buttons.indexOf(document.activeElement);
        e.preventDefault();
        buttons[(i + (e.shiftKey ? buttons.length - 1 : 1)) % buttons.length].focus();
      }
    });
    return state;
  }

  function show() {
    var item = lb.items[lb.index];
    var src = zoomSource(item);
    var stage = lb.box.querySelector(".lb-stage");
    var vw = window.innerWidth * 0.88;
    var vh = window.innerHeight * 0.78;
    var scale = Math.min(vw / src.w, vh / src.h);
    var w = Math.max(1, Math.round(src.w * scale));
    var h = Math.max(1, Math.round(src.h * scale));
    stage.innerHTML = "";
    var el;
    if (src.img) {
      el = document.createElement("img");
      el.src = src.img;
      el.alt = src.alt;
    } else {
      el = document.createElement("div");
      el.setAttribute("role", "img");
      el.setAttribute("aria-label", src.alt);
      el.style.backgroundImage = src.bg;
      el.style.backgroundSize = src.size;
      el.style.backgroundPosition = src.pos;
      el.style.backgroundRepeat = "no-repeat";
    }
    el.className = "lb-img" + (src.px ? " px" : "");
    el.style.width = w + "px";
    el.style.height = h + "px";
    stage.appendChild(el);
    var n = lb.items.length;
    document.getElementById("lb-cap").textContent = src.alt + (n > 1 ? " (" + (lb.index + 1) + " of " + n + ")" : "");
    lb.box.querySelector(".lb-prev").hidden = n < 2;
    lb.box.querySelector(".lb-next").hidden = n < 2;
  }

  function step(d) {
    var n = lb.items.length;
    if (n < 2) { return; }
    lb.index = (lb.index + d + n) % n;
    show();
  }

  function openLightbox(items, index, opener) {
    if (!lb) { lb = buildLightbox(); }
    lb.items = items;
    lb.index = index;
    lb.opener = opener;
    lb.box.hidden = false;
    document.documentElement.classList.add("lb-open");
    show();
    lb.box.querySelector(".lb-close").focus();
  }

  function closeLightbox() {
    if (!lb || lb.box.hidden) { return; }
    lb.box.hidden = true;
    document.documentElement.classList.remove("lb-open");
    if (lb.opener && lb.opener.focus) { lb.opener.focus(); }
  }

  function setupLightbox() {
    var main = document.querySelector("main");
    if (!main) { return; }
    var all = Array.prototype.slice.call(main.querySelectorAll("img, .cell[role=img]"));
    if (!all.length) { return; }
    function group(el) {
      var scope = el.closest("section, article") || main;
      return all.filter(function (x) { return (x.closest("section, article") || main) === scope; });
    }
    var hosts = [];
    all.forEach(function (el) {
      var link = el.closest("a");
      if (!link) {
        el.classList.add("zoomable");
        el.setAttribute("tabindex", "0");
        if (!el.getAttribute("title")) { el.setAttribute("title", "Click to enlarge"); }
        var open = function () { var g = group(el); openLightbox(g, g.indexOf(el), el); };
        el.addEventListener("click", open);
        el.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
        });
      } else if (hosts.indexOf(link) === -1) {
        hosts.push(link);
      }
    });
    hosts.forEach(function (link) {
      var inside = all.filter(function (x) { return link.contains(x); });
      var first = inside.filter(function (x) { return x.classList.contains("sprite"); })[0] || inside[0];
      var button = document.createElement("button");
      button.type = "button";
      button.className = "zoom-btn";
      button.textContent = "⤢";
      var what = first.getAttribute("alt") || first.getAttribute("aria-label") || "image";
      button.setAttribute("aria-label", "Enlarge: " + what);
      button.title = "Enlarge";
      button.addEventListener("click", function (e) {
        e.preventDefault();
        openLightbox(inside, inside.indexOf(first), button);
      });
      var host = link.parentNode;
      if (window.getComputedStyle(host).position === "static") { host.classList.add("zoom-host"); }
      link.insertAdjacentElement("afterend", button);
    });
  }

  // Unit pages: each reconstruction drawn over its patch (hard-light: mid-grey leaves the patch as
  // it is, brighter and darker signal lighten and darken it); the choice sticks like presentation mode.
  // Magnitude view (DeepVis's "deconvnorm"): an SVG filter maps grey (no signal) to white and both
  // signs to dark, averaged over channels: computed by the browser, no extra images.
  // dflt: the state before any choice was saved (the activation outlines start shown).
  function setupViewToggle(attr, cls, key, storage, dflt) {
    var buttons = document.querySelectorAll("[" + attr + "]");
    if (!buttons.length) { return; }
    var sections = document.querySelectorAll("section.entries");
    function apply(on) {
      sections.forEach(function (s) { s.classList.toggle(cls, on); });
      buttons.forEach(function (b) { b.setAttribute("aria-pressed", on ? "true" : "false"); });
      try { window.localStorage.setItem(storage, on ? "1" : "0"); } catch (e) { /* private mode */ }
    }
    var saved = null;
    try { saved = window.localStorage.getItem(storage); } catch (e) { /* private mode */ }
    apply(saved === null ? !!dflt : saved === "1");
    buttons.forEach(function (b) {
      b.addEventListener("click", function () { apply(b.getAttribute("aria-pressed") !== "true"); });
    });
    document.addEventListener("keydown", function (e) {
      if (e.key.toLowerCase() === key && !e.ctrlKey && !e.metaKey && !e.altKey &&
          !/^(INPUT|TEXTAREA|SELECT)$/.test((e.target && e.target.tagName) || "")) {
        apply(buttons[0].getAttribute("aria-pressed") !== "true");
      }
    });
  }

  function setupOverlay() {
    setupViewToggle("data-overlay-toggle", "overlay", "o", "sitegen-overlay");
    setupViewToggle("data-magnitude-toggle", "magnitude", "m", "sitegen-magnitude");
    // Issue 15 (7): the unit's activation outline over its top images and patches (NetDissect masks).
    setupViewToggle("data-outline-toggle", "outlines", "a", "sitegen-outline", true);
  }

  function init() {
    setupPresent();
    setupOverlay();
    setupLightbox();
    setupKeys();
    setupTiles();
    setupFigureSelects();
    ensurePlotly(drawFigures);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
