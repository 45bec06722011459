// Deal Registry pages: the overview's live list of latest events. Everything else works
// without script. Listens to the event stream (GET /v1/stream, same origin, the session
// cookie authenticates) where the service serves it; otherwise polls a small JSON page.
(function () {
  "use strict";
  var section = document.querySelector("[data-live]");
  if (!section || section.hasAttribute("data-paused")) { return; }
  var state = section.querySelector("[data-live-state]");
  var body = section.querySelector("tbody");
  var lastPosition = null;
  var POLL_MS = 3000;

  function render(summary) {
    if (lastPosition !== null && summary.position === lastPosition) { return; }
    lastPosition = summary.position;
    while (body.firstChild) { body.removeChild(body.firstChild); }
    summary.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (value, index) {
        var td = document.createElement("td");
        td.textContent = value;  // text, never markup
        td.setAttribute("data-value", value);
        if (index === 0 || index === 3) { td.className = "num"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    section.setAttribute("data-position", String(summary.position));
    if (state) { state.textContent = "Up to log position " + summary.position + "."; }
  }

  function refresh() {
    return fetch(section.getAttribute("data-live"), {credentials: "same-origin",
                                                     headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/sign-in"); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (summary) { if (summary) { render(summary); } })
      .catch(function () { /* the next tick tries again */ });
  }

  function poll() { refresh().then(function () { window.setTimeout(poll, POLL_MS); }); }

  var stream = section.getAttribute("data-stream");
  if (stream && window.EventSource) {
    var source = new EventSource(stream, {withCredentials: true});
    // A recorded event's summary arrives as `event: recorded`; the table is re-read so it
    // shows exactly what the page itself would.
    source.addEventListener("recorded", function () { refresh(); });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { poll(); }
    };
    refresh();
  } else {
    poll();
  }
}());
