// Deal Registry pages: live pages. Everything works without script. With it, a live page
// (<main data-live-page>) fetches itself again when the event stream (GET /v1/stream, same
// origin, the session cookie authenticates) reports a recorded event, or, where the stream
// is not to be had, when polling the log position finds it moved; <main>'s content becomes
// the server's new one and `dealreg:updated` (detail: <main>) tells charts.js to redraw.
// Paused while the page shows the past (data-live-paused).
(function () {
  "use strict";
  var main = document.querySelector("main[data-live-page]");
  if (!main || main.hasAttribute("data-live-paused")) { return; }
  var state = document.querySelector("[data-live-state]");
  var POLL_MS = 2000;
  var inFlight = false;  // at most one fetch at a time
  var again = false;     // events arrived during it: fetch once more after it
  var deferred = false;  // an update waits for the reader to leave a form field

  function position() { return main.getAttribute("data-position") || "0"; }

  function signIn() {
    window.location.assign("/sign-in?next=" +
                           encodeURIComponent(location.pathname + location.search));
  }

  function isField(el) { return /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName); }

  function changed(field) {
    if (field.type === "hidden") { return false; }
    if (field.tagName === "SELECT") {  // without a `selected` option the first is the default
      var chosen = Array.prototype.findIndex.call(field.options,
                                                  function (o) { return o.defaultSelected; });
      return field.selectedIndex !== Math.max(chosen, 0);
    }
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    return field.value !== field.defaultValue;
  }

  // Replacing now would lose what the reader is typing or has chosen but not yet submitted.
  function busy() {
    var active = document.activeElement;
    if (active && main.contains(active) && isField(active)) { return true; }
    return Array.prototype.some.call(main.querySelectorAll("input, select, textarea"), changed);
  }

  function focusKey() {
    var el = document.activeElement;
    if (!el || el === main || !main.contains(el)) { return null; }
    return {id: el.id, tag: el.tagName, href: el.getAttribute("href"),
            index: Array.prototype.indexOf.call(main.querySelectorAll(el.tagName), el)};
  }

  function refocus(key) {
    if (!key) { return; }
    var el = key.id ? document.getElementById(key.id) : null;
    if (!el && key.href) {
      el = Array.prototype.filter.call(main.querySelectorAll(key.tag), function (candidate) {
        return candidate.getAttribute("href") === key.href;
      })[0];
    }
    if (!el) { el = main.querySelectorAll(key.tag)[key.index]; }
    (el && main.contains(el) ? el : main).focus({preventScroll: true});
  }

  function replace(html) {
    if (busy()) { deferred = true; return; }  // the reader began typing while it loaded
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var region = fresh.querySelector("main[data-live-page]");
    if (!region) { return; }
    var key = focusKey();
    var scrolls = Array.prototype.map.call(main.querySelectorAll(".scroll"),
                                           function (el) { return el.scrollLeft; });
    // The server's own markup, parsed (scripts in it do not run); no data goes in as HTML.
    main.replaceChildren.apply(main, Array.prototype.slice.call(region.childNodes));
    main.setAttribute("data-position", region.getAttribute("data-position") || position());
    Array.prototype.forEach.call(main.querySelectorAll(".scroll"), function (el, i) {
      if (scrolls[i]) { el.scrollLeft = scrolls[i]; }
    });
    var shown = document.querySelector("[data-travel-state]");
    var fresher = fresh.querySelector("[data-travel-state]");
    if (shown && fresher) { shown.textContent = fresher.textContent; }
    document.title = fresh.title;
    refocus(key);
    if (state) { state.textContent = "Updated to log position " + position() + "."; }
    document.dispatchEvent(new CustomEvent("dealreg:updated", {detail: main}));
  }

  function refresh() {
    if (inFlight) { again = true; return; }
    if (busy()) { deferred = true; return; }
    inFlight = true;
    again = false;
    deferred = false;
    fetch(location.href, {credentials: "same-origin", cache: "no-store",
                          headers: {"Accept": "text/html"}})
      .then(function (r) {
        // Signed out: the page answers with the sign-in form (or a 401).
        if (r.status === 401 || (r.redirected && new URL(r.url).pathname === "/sign-in")) {
          signIn();
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null) { replace(html); } })
      .catch(function () { /* the next event or poll tries again */ })
      .then(function () {
        inFlight = false;
        if (again) { refresh(); }
      });
  }

  function retry() {  // after focus has moved on
    window.setTimeout(function () { if (deferred) { refresh(); } }, 0);
  }
  main.addEventListener("focusout", retry);
  main.addEventListener("change", retry);

  function poll() {
    fetch(main.getAttribute("data-poll"), {credentials: "same-origin", cache: "no-store",
                                           headers: {"Accept": "application/json"}})
      .then(function (r) {
        if (r.status === 401) { signIn(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (answer) {
        if (answer && String(answer.position) !== position()) { refresh(); }
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { window.setTimeout(poll, POLL_MS); });
  }

  var stream = main.getAttribute("data-stream");
  if (stream && window.EventSource) {
    // From the page's own position: an event recorded since it was rendered updates it.
    var source = new EventSource(stream + "?after=" + encodeURIComponent(position()),
                                 {withCredentials: true});
    source.addEventListener("recorded", refresh);
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) { poll(); }
    };
  } else {
    poll();
  }
}());
