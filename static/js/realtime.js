// Websocket glue for the realtime hub (see workbench/consumers.py).
// Each message starts with <!--wb:GROUP:SEQ-->. Stale messages are dropped; a gap in a group's
// sequence, or a reconnect, makes the page refetch its live fragments ("wb:resync" on <body>).
(function () {
  "use strict";
  var MARK = /^<!--wb:([a-z_]+(?:\.[0-9]+)?):([0-9]+)-->/;
  var seen = null;
  var opened = 0;

  function resync() {
    document.body.dispatchEvent(new CustomEvent("wb:resync", { bubbles: true }));
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    if (seen === null) {
      try {
        seen = JSON.parse(evt.target.getAttribute("data-wb-seq") || "{}");
      } catch (e) {
        seen = {};
      }
    }
    opened += 1;
    document.documentElement.dataset.wbSocket = "open";
    // Events published while we were away are gone: refetch what the page shows.
    if (opened > 1) resync();
  });

  // htmx wires the page once the document is parsed; until then typing in a live field (a
  // search box) does nothing. Tests and tools wait on this mark, not on a fixed delay.
  document.addEventListener("htmx:load", function (evt) {
    if (evt.target === document.body) document.documentElement.dataset.wbHtmx = "ready";
  });

  document.addEventListener("htmx:wsClose", function () {
    document.documentElement.dataset.wbSocket = "closed";
  });

  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    var match = MARK.exec(evt.detail.message || "");
    if (!match) return;
    var group = match[1];
    var seq = parseInt(match[2], 10);
    seen = seen || {};
    var last = seen[group] || 0;
    if (seq <= last) {
      evt.preventDefault(); // already shown (or older than the page itself)
      return;
    }
    seen[group] = seq;
    if (seq > last + 1) {
      evt.preventDefault();
      resync(); // we missed at least one event: the database has the truth
    }
  });
})();
