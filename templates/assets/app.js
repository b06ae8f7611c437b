/* sitegen atlas: draws the Plotly figures (and swaps them on <select>), sorts/filters unit tiles, and
   maps ←/→ to prev/next unit.
   Plain ES5-compatible JavaScript, no framework, no network: it must work from file:// too. */
(function () {
  "use strict";

  var PLOTLY_CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"]
  };

  /* Each <div data-figure="ID-data"> names a <script type="application/json"> holding {data, layout}. */
  function drawFigures() {
    if (!window.Plotly) { return; }
    var divs = document.querySelectorAll("[data-figure]");
    Array.prototype.forEach.call(divs, function (div) {
      var source = document.getElementById(div.getAttribute("data-figure"));
      if (!source) { return; }
      var fig = JSON.parse(source.textContent);
      window.Plotly.newPlot(div, fig.data, fig.layout, PLOTLY_CONFIG);
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
        var fig = JSON.parse(source.textContent);
        div.setAttribute("data-figure", select.value);
        window.Plotly.react(div, fig.data, fig.layout, PLOTLY_CONFIG);
      });
    });
  }

  var SORTS = {
    "unit": function (a, b) { return a.unit - b.unit; },
    "purity": function (a, b) { return b.purity - a.purity || a.unit - b.unit; },
    "purity-asc": function (a, b) { return a.purity - b.purity || a.unit - b.unit; },
    "class": function (a, b) {
      return a.klass < b.klass ? -1 : a.klass > b.klass ? 1 : b.purity - a.purity || a.unit - b.unit;
    }
  };

  /* Layer pages: tiles carry data-unit, data-purity and data-class; the controls reorder and hide them. */
  function setupTiles() {
    var grid = document.getElementById("tiles");
    var form = document.getElementById("tile-controls");
    if (!grid || !form) { return; }
    var sort = document.getElementById("tile-sort");
    var filter = document.getElementById("tile-filter");
    var purity = document.getElementById("tile-purity");
    var purityOut = document.getElementById("tile-purity-out");
    var count = document.getElementById("tile-count");
    var empty = document.getElementById("tile-empty");
    var tiles = Array.prototype.map.call(grid.children, function (el) {
      return {
        el: el,
        unit: Number(el.getAttribute("data-unit")),
        purity: Number(el.getAttribute("data-purity")),
        klass: (el.getAttribute("data-class") || "").toLowerCase()
      };
    });

    function matches(t, query, minPurity) {
      if (t.purity + 1e-9 < minPurity) { return false; }
      if (!query) { return true; }
      var number = query.replace(/^#/, "");
      if (/^\d+$/.test(number) && t.unit === Number(number)) { return true; }
      return t.klass.indexOf(query) !== -1;
    }

    function apply() {
      var query = filter.value.trim().toLowerCase();
      var minPurity = Number(purity.value) / 100;
      purityOut.textContent = purity.value + "%";
      var order = tiles.slice().sort(SORTS[sort.value] || SORTS.unit);
      var shown = 0;
      var frag = document.createDocumentFragment();
      order.forEach(function (t) {
        var ok = matches(t, query, minPurity);
        t.el.hidden = !ok;
        if (ok) { shown += 1; }
        frag.appendChild(t.el);
      });
      grid.appendChild(frag);
      count.textContent = shown === tiles.length ? tiles.length + " units" : shown + " of " + tiles.length + " units";
      empty.hidden = shown !== 0;
    }

    form.addEventListener("submit", function (e) { e.preventDefault(); });
    sort.addEventListener("change", apply);
    filter.addEventListener("input", apply);
    purity.addEventListener("input", apply);
    apply();
  }

  /* Unit pages: ←/→ follow the links marked data-key, unless the user is typing. */
  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) { return; }
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

  function init() {
    setupKeys();
    setupTiles();
    setupFigureSelects();
    drawFigures();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
