// The case page: presence over the page's realtime socket, and keyboard shortcuts.
// Presence frames (workbench/consumers.py, workbench/presence.py):
//   {"type": "presence", "case": 12}                  a heartbeat, on open and every 15 s
//   {"type": "presence", "case": 12, "typing": true}  while #composer-body gets keystrokes
// Shortcuts, when focus is not in a text field: r reply, n note, j take next, ? help.
// Every element but #case-live may be missing (the composer belongs to another part of the
// page): a shortcut whose element is not there does nothing.
(function () {
  "use strict";
  var HEARTBEAT_MS = 15000;
  var TYPING_REFRESH_MS = 3000; // the server forgets "typing" 6 s after the last refresh
  var TYPING_IDLE_MS = 2500;

  var live = document.getElementById("case-live");
  if (!live) return;
  var caseId = parseInt(live.getAttribute("data-case-id"), 10);
  if (!(caseId > 0)) return;

  var socket = null; // the htmx ws extension's socket wrapper, while open
  var typing = false;
  var typingSentAt = 0;
  var idleTimer = null;

  function send(fields) {
    if (!socket || document.documentElement.dataset.wbSocket !== "open") return;
    var frame = { type: "presence", case: caseId };
    for (var key in fields) frame[key] = fields[key];
    try {
      socket.send(JSON.stringify(frame));
    } catch (e) {
      socket = null; // closed under us; the next wsOpen brings a new one
    }
  }

  function heartbeat() {
    send({});
  }

  document.addEventListener("htmx:wsOpen", function (evt) {
    socket = evt.detail && evt.detail.socketWrapper;
    typing = false;
    heartbeat();
  });
  document.addEventListener("htmx:wsClose", function () {
    socket = null;
    typing = false;
  });
  window.setInterval(heartbeat, HEARTBEAT_MS);

  // --- typing ----------------------------------------------------------------------------------

  function stopTyping() {
    window.clearTimeout(idleTimer);
    idleTimer = null;
    if (typing) {
      typing = false;
      send({ typing: false });
    }
  }

  function isComposer(el) {
    return el && el.id === "composer-body";
  }

  // Delegated: the composer may be swapped in and out by htmx after this script ran.
  document.addEventListener("input", function (evt) {
    if (!isComposer(evt.target)) return;
    var now = Date.now();
    if (!typing || now - typingSentAt >= TYPING_REFRESH_MS) {
      typing = true;
      typingSentAt = now;
      send({ typing: true });
    }
    window.clearTimeout(idleTimer);
    idleTimer = window.setTimeout(stopTyping, TYPING_IDLE_MS);
  });
  document.addEventListener("focusout", function (evt) {
    if (isComposer(evt.target)) stopTyping();
  });
  document.addEventListener("submit", function (evt) {
    if (evt.target && evt.target.contains && evt.target.contains(document.getElementById("composer-body"))) {
      stopTyping();
    }
  });

  // --- keyboard shortcuts ------------------------------------------------------------------------

  function isTextField(el) {
    if (!el || el === document.body) return false;
    if (el.isContentEditable) return true;
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT") return true;
    if (tag !== "INPUT") return false;
    var type = (el.getAttribute("type") || "text").toLowerCase();
    return ["button", "checkbox", "radio", "submit", "reset", "image", "file", "range", "color"].indexOf(type) < 0;
  }

  function compose(modeId) {
    var mode = document.getElementById(modeId);
    var body = document.getElementById("composer-body");
    if (!mode || !body) return false;
    if (!(mode.type === "radio" && mode.checked)) mode.click();
    body.focus();
    return true;
  }

  function takeNext() {
    var form = document.getElementById("take-next-form");
    if (!form) return false;
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
    return true;
  }

  var toggle = document.getElementById("shortcuts-toggle");
  function toggleHelp() {
    var help = document.getElementById("shortcuts-help");
    if (!help) return false;
    help.hidden = !help.hidden;
    if (toggle) toggle.setAttribute("aria-expanded", help.hidden ? "false" : "true");
    return true;
  }
  if (toggle) toggle.addEventListener("click", toggleHelp);

  var SHORTCUTS = {
    r: function () { return compose("composer-mode-reply"); },
    n: function () { return compose("composer-mode-note"); },
    j: takeNext,
    "?": toggleHelp,
  };

  document.addEventListener("keydown", function (evt) {
    if (evt.defaultPrevented || evt.repeat || evt.ctrlKey || evt.metaKey || evt.altKey) return;
    if (isTextField(document.activeElement)) return;
    var action = SHORTCUTS[evt.key];
    if (action && action()) evt.preventDefault();
  });
})();
