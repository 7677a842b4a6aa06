// Offline, dependency-free table sorting and filtering for the invert report.
(function () {
  function cellValue(td) {
    var v = td.getAttribute("data-v");
    if (v === null) v = td.textContent.trim();
    var x = parseFloat(v);
    return (v !== "" && !isNaN(x) && isFinite(v)) ? x : v.toLowerCase();
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = !th.classList.contains("asc");
    Array.prototype.forEach.call(table.tHead.rows[table.tHead.rows.length - 1].cells, function (c) {
      c.classList.remove("asc", "desc");
    });
    th.classList.add(asc ? "asc" : "desc");
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
      var xe = (x === "" || x === "-"), ye = (y === "" || y === "-");
      if (xe !== ye) return xe ? 1 : -1;  // empty cells last
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      var r = x < y ? -1 : (x > y ? 1 : 0);
      return asc ? r : -r;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function init() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[table.tHead.rows.length - 1].cells, function (th, i) {
        if (!th.classList.contains("sortable")) return;
        th.addEventListener("click", function () { sortBy(table, i, th); });
      });
    });
    var filter = document.getElementById("filter");
    var layer = document.getElementById("layer");
    function apply() {
      var q = filter ? filter.value.toLowerCase() : "";
      var l = layer ? layer.value : "";
      var shown = 0;
      document.querySelectorAll("#units tbody tr").forEach(function (tr) {
        var ok = (!q || tr.textContent.toLowerCase().indexOf(q) >= 0) &&
                 (!l || tr.getAttribute("data-layer") === l);
        tr.style.display = ok ? "" : "none";
        if (ok) shown++;
      });
      var c = document.getElementById("count");
      if (c) c.textContent = shown + " units shown";
    }
    if (filter) filter.addEventListener("input", apply);
    if (layer) layer.addEventListener("change", apply);
    apply();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
