// Deal Registry pages: draws every canvas[data-chart] from its JSON island (charts.py) with
// the vendored Chart.js. A range is a floating bar [low, high] or a band between a low and a
// high line, never a midpoint alone. The table beside each chart holds the same figures and
// is the view without script. Charts inside an element are drawn again when site.js replaces
// it: a `dealreg:updated` event on document, its detail the element.
(function () {
  "use strict";
  var Chart = window.Chart;
  if (!Chart) { return; }
  document.documentElement.classList.add("charts-on");  // chart boxes show (site.css)
  var INK = "#1b1f24", MUTED = "#57606a", LINE = "#d0d7de", BAR = "#2f7ed8";
  var FILL = "rgba(47, 126, 216, 0.3)";
  var ROW_PX = 30, AXIS_PX = 44;
  var compact = new Intl.NumberFormat("en-US", {style: "currency", currency: "USD",
                                                notation: "compact", maximumFractionDigits: 2});

  function usd(value) { return compact.format(value); }

  function dollars() {  // one dollar scale from 0, compact ticks ($25M)
    return {beginAtZero: true, grid: {color: LINE},
            ticks: {color: MUTED, callback: function (value) { return usd(value); }}};
  }

  function options(extra) {
    // Drawn at once, also when redrawn after an update: nothing moves under the reader.
    var base = {responsive: true, maintainAspectRatio: false, animation: false};
    return Object.assign(base, extra);
  }

  function rangeChart(spec) {
    return {
      type: "bar",
      data: {labels: spec.labels, datasets: [{
        label: "USD, low to high",
        data: spec.ranges.map(function (r) { return [Number(r[0]), Number(r[1])]; }),
        backgroundColor: FILL, borderColor: BAR, borderWidth: 2, borderSkipped: false,
        minBarLength: 3, barPercentage: 0.7}]},
      options: options({
        indexAxis: "y",
        scales: {
          x: dollars(),
          y: {grid: {display: false}, ticks: {color: INK, callback: function (value) {
            var label = String(this.getLabelForValue(value));
            return label.length > 26 ? label.slice(0, 25) + "…" : label;
          }}}},
        plugins: {legend: {display: false}, tooltip: {callbacks: {label: function (c) {
          return usd(c.raw[0]) + " – " + usd(c.raw[1]);
        }}}}})
    };
  }

  function bandChart(spec) {
    var line = {borderColor: BAR, backgroundColor: FILL, borderWidth: 2, pointRadius: 2};
    return {
      type: "line",
      data: {labels: spec.labels, datasets: [
        Object.assign({label: "low", data: spec.low.map(Number), fill: false}, line),
        Object.assign({label: "high", data: spec.high.map(Number), fill: "-1"}, line)]},
      options: options({
        interaction: {mode: "index", intersect: false},
        scales: {y: dollars(), x: {grid: {display: false},
                                   ticks: {color: MUTED, maxRotation: 0, maxTicksLimit: 6}}},
        plugins: {legend: {display: false}, tooltip: {callbacks: {label: function (c) {
          return c.dataset.label + " " + usd(c.raw);
        }}}}})
    };
  }

  function draw(root) {
    Array.prototype.forEach.call(root.querySelectorAll("canvas[data-chart]"), function (canvas) {
      var old = Chart.getChart(canvas);
      if (old) { old.destroy(); }
      var island = document.getElementById(canvas.getAttribute("data-chart"));
      if (!island) { return; }
      var spec = JSON.parse(island.textContent);
      if (spec.kind === "range") {
        canvas.parentNode.style.height = (spec.labels.length * ROW_PX + AXIS_PX) + "px";
        new Chart(canvas, rangeChart(spec));
      } else if (spec.kind === "band") {
        new Chart(canvas, bandChart(spec));
      }
    });
  }

  document.addEventListener("dealreg:updated", function (event) {
    draw(event.detail instanceof Element ? event.detail : document);
  });
  draw(document);
}());
