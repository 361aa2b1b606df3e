// The console's only script (no build step): ages, and live updates from /api/live.
// When the feed says something changed (for this page's workflow, on a workflow page),
// the page's live part is fetched again with X-Fragment: 1 and swapped in place.
(function () {
  "use strict";
  function ages() {
    document.querySelectorAll("[data-since]").forEach(function (cell) {
      var seconds = Math.max(0, (Date.now() - Date.parse(cell.dataset.since)) / 1000);
      cell.textContent = seconds < 90 ? Math.round(seconds) + " s"
        : seconds < 5400 ? Math.round(seconds / 60) + " min"
        : seconds < 172800 ? Math.round(seconds / 3600) + " h" : Math.round(seconds / 86400) + " d";
    });
  }
  var timer = null;
  // A form someone is in, or has started to fill in, is never swapped out under them:
  // the redraw waits until they leave the field, or submit or empty the form. (A field
  // swapped out after a click into it, before the typing, took the typing with it.)
  function busy() {
    var live = document.getElementById("live");
    var focused = document.activeElement;
    if (focused && live.contains(focused) && focused.matches("input, textarea, select")) {
      return true;
    }
    return Array.prototype.some.call(live.querySelectorAll("input:not([type=hidden])"),
      function (input) { return input.value && input.defaultValue !== input.value; });
  }
  // Refreshes may overlap, and their answers arrive in any order (the server reads in a
  // thread pool): an answer older than the one shown is dropped, or the page would go
  // back to a state before the last update and stay there.
  var asked = 0, shown = 0;
  function refresh() {
    if (busy()) { timer = setTimeout(refresh, 1000); return; }
    var mine = ++asked;
    fetch(location.href, { headers: { "X-Fragment": "1" } }).then(function (response) {
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html === null || mine < shown) return;
      if (busy()) { timer = setTimeout(refresh, 1000); return; }
      shown = mine;
      var live = document.getElementById("live");
      var open = Array.from(live.querySelectorAll("details[open]"), function (d) {
        return Array.prototype.indexOf.call(live.querySelectorAll("details"), d);
      });
      live.innerHTML = html;
      var all = live.querySelectorAll("details");
      open.forEach(function (i) { if (all[i]) all[i].open = true; });
      document.body.dataset.refreshed = String(Date.now());
      ages();
    });
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 100); }
  var scope = document.body.dataset.workflow;
  var feed = new EventSource("/api/live");
  feed.addEventListener("hello", schedule);
  feed.onmessage = function (message) {
    var update = JSON.parse(message.data);
    if (scope && update.workflowId && update.workflowId !== scope) return;
    schedule();
  };
  ages();
  setInterval(ages, 10000);
})();
