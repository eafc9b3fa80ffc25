// The motor page's charts: each query's score and window aggregates over the last hour and
// the last day, drawn with uPlot from the JSON the server embedded in the page.
(function () {
  const data = document.getElementById("windows-data");
  if (!data || !window.uPlot) return;
  const series = JSON.parse(data.textContent);
  const palette = ["#1565c0", "#c62828", "#2e7d32", "#e65100", "#6a1b9a", "#00838f", "#5d4037", "#ad1457"];
  for (const box of document.querySelectorAll("[data-charts]")) {
    const span = box.dataset.charts === "hour" ? 3600 : 86400;
    for (const [query, q] of Object.entries(series)) {
      const newest = q.t[q.t.length - 1];
      const from = q.t.findIndex((t) => t > newest - span);
      const cut = (a) => a.slice(from < 0 ? 0 : from);
      // A series with no value at all (a query that scores nothing) draws no chart.
      const drawn = ([, lines]) => Object.values(lines).some((v) => v.some((x) => x !== null));
      const charts = [["score", { score: q.score }], ...Object.entries(q.features).map(([k, v]) => [k, { [k]: v }])]
        .filter(drawn);
      for (const [title, lines] of charts.slice(0, 9)) {
        const el = document.createElement("div");
        el.className = "chart";
        el.dataset.query = query;
        el.dataset.series = title;
        box.appendChild(el);
        const names = Object.keys(lines);
        new uPlot({
          title: query + " · " + title,
          width: 420, height: 180,
          series: [{}, ...names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], spanGaps: true }))],
        }, [cut(q.t), ...names.map((n) => cut(lines[n]))], el);
      }
    }
  }
})();
