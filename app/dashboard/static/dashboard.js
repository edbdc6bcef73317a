/* Tributary dashboard: progressive enhancement only. Every page works without this file. */
(function () {
  "use strict";

  var COLORS = { received: "#2563eb", processed: "#15803d", failed: "#b91c1c" };

  function drawChart(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") return;
    var data = JSON.parse(el.dataset.chart);
    var width = Math.max(240, el.clientWidth);
    var opts = {
      width: width,
      height: 160,
      legend: { show: true },
      // The axis says UTC, so the ticks must be UTC whatever the browser's time zone.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(4, max)]; } } },
      axes: [
        { stroke: "#475569", grid: { stroke: "#e2e8f0" }, ticks: { stroke: "#cbd5e1" } },
        { stroke: "#475569", grid: { stroke: "#e2e8f0" }, ticks: { stroke: "#cbd5e1" }, size: 44 },
      ],
      series: [
        { label: "hour (UTC)" },
        { label: "received", stroke: COLORS.received, width: 2, fill: "rgba(37,99,235,0.08)" },
        { label: "processed", stroke: COLORS.processed, width: 2 },
        { label: "failed", stroke: COLORS.failed, width: 2 },
      ],
    };
    el.dataset.drawn = "1";
    el.chart = new uPlot(opts, [data.x, data.received, data.processed, data.failed], el);
  }

  function drawCharts(root) {
    root.querySelectorAll("[data-chart]").forEach(drawChart);
  }

  function enableCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) return;
      button.hidden = false;
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var input = document.getElementById(button.dataset.copy);
        navigator.clipboard.writeText(input.value).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
    });
  }

  function resizeCharts() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.chart) el.chart.setSize({ width: Math.max(240, el.clientWidth), height: 160 });
    });
  }

  function init(root) {
    document.documentElement.classList.add("js");
    drawCharts(root);
    enableCopy(root);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  var pending;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(resizeCharts, 150);
  });
})();
