// Workbench live chat widget: one tag on any allowed website opens a chat bubble.
//   <script src="https://workbench.example/static/js/chat-widget.js"
//           data-workbench="https://workbench.example" defer></script>
// Optional: data-title="Shop support". Plain JS, no build step, no dependencies.
// It speaks JSON frames to wss://<workbench>/ws/chat/ (see workbench/connectors/chat.py), keeps
// its signed visitor token and the last message id it showed in this site's localStorage, and
// on every (re)connect asks for what it missed. Messages not yet confirmed are sent again with
// the same id after a reconnect; the server stores each once. Until the conversation has a
// message, the visitor may give their name (optional); it travels with their first message.
(function () {
  "use strict";
  if (window.__workbenchChat) return;
  window.__workbenchChat = true;

  var script = document.currentScript || document.querySelector('script[src*="chat-widget.js"]');
  if (!script) return;
  var scriptUrl = new URL(script.src, window.location.href);
  var base = (script.getAttribute("data-workbench") || scriptUrl.origin).replace(/\/+$/, "");
  var title = script.getAttribute("data-title") || "Chat with us";
  var socketUrl = base.replace(/^http/, "ws") + "/ws/chat/";
  var cssUrl = scriptUrl.href.replace(/js\/chat-widget\.js(\?.*)?$/, "css/chat-widget.css");

  var KEY_TOKEN = "workbenchChat.token";
  var KEY_LAST = "workbenchChat.lastSeen";
  var KEY_OPEN = "workbenchChat.open";
  var KEY_EMAIL = "workbenchChat.email";
  var TYPING_REFRESH_MS = 3000;
  var TYPING_IDLE_MS = 2500;

  function load(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }
  function save(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, String(value));
    } catch (e) { /* private mode: the chat still works for this page */ }
  }
  function newId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    if (text) node.textContent = text;
    return node;
  }

  // A speech bubble drawn in SVG: no icon font or emoji, which not every system has.
  function chatIcon() {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "26");
    svg.setAttribute("height", "26");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("fill", "currentColor");
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
    svg.appendChild(path);
    return svg;
  }

  // --- the DOM ---------------------------------------------------------------------------------

  var link = el("link", { rel: "stylesheet", href: cssUrl });
  document.head.appendChild(link);

  var root = el("div", { class: "wbchat", "data-state": "closed" });
  var bubble = el("button", {
    type: "button", class: "wbchat-bubble", "aria-label": "Open chat: " + title,
    "aria-expanded": "false", "aria-controls": "wbchat-panel",
  });
  bubble.appendChild(chatIcon());
  var unread = el("span", { class: "wbchat-unread", hidden: "" });
  bubble.appendChild(unread);

  var panel = el("section", { id: "wbchat-panel", class: "wbchat-panel", role: "dialog",
    "aria-labelledby": "wbchat-title", hidden: "" });
  var header = el("header", { class: "wbchat-header" });
  var heading = el("h2", { id: "wbchat-title", class: "wbchat-title" }, title);
  var state = el("p", { class: "wbchat-state", "data-connection": "connecting", "aria-live": "polite" }, "Connecting…");
  var close = el("button", { type: "button", class: "wbchat-close", "aria-label": "Close chat" }, "×");
  var headText = el("div");
  headText.appendChild(heading);
  headText.appendChild(state);
  header.appendChild(headText);
  header.appendChild(close);

  var log = el("ol", { class: "wbchat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0" });
  var empty = el("li", { class: "wbchat-empty" }, "Ask us anything about your order. We usually answer within minutes.");
  log.appendChild(empty);
  var typingLine = el("p", { class: "wbchat-typing", "aria-live": "polite" });
  var alertLine = el("p", { class: "wbchat-alert", role: "alert" });

  var offline = el("form", { class: "wbchat-offline", hidden: "", novalidate: "" });
  offline.appendChild(el("p", { class: "wbchat-offline-text" },
    "Nobody is online right now. Leave your email and we'll answer you by email."));
  var emailLabel = el("label", { for: "wbchat-email" }, "Your email");
  var emailInput = el("input", { id: "wbchat-email", type: "email", autocomplete: "email", required: "", maxlength: "254" });
  var emailButton = el("button", { type: "submit", class: "wbchat-secondary" }, "Answer me by email");
  offline.appendChild(emailLabel);
  offline.appendChild(emailInput);
  offline.appendChild(emailButton);

  // Optional, and asked only before the first message: who the agent will be talking to.
  var nameRow = el("div", { class: "wbchat-name" });
  var nameLabel = el("label", { for: "wbchat-name" }, "Your name (optional)");
  var nameInput = el("input", { id: "wbchat-name", type: "text", autocomplete: "name", maxlength: "80",
    "aria-describedby": "wbchat-name-hint" });
  var nameHint = el("span", { id: "wbchat-name-hint", class: "wbchat-visually-hidden" }, "Enter moves to the message.");
  nameRow.appendChild(nameLabel);
  nameRow.appendChild(nameInput);
  nameRow.appendChild(nameHint);

  var form = el("form", { class: "wbchat-form", novalidate: "" });
  var inputLabel = el("label", { for: "wbchat-input", class: "wbchat-visually-hidden" }, "Your message");
  var input = el("textarea", { id: "wbchat-input", rows: "2", maxlength: "2000",
    placeholder: "Write a message… (Enter sends)", "aria-describedby": "wbchat-hint" });
  var hint = el("span", { id: "wbchat-hint", class: "wbchat-visually-hidden" }, "Enter sends, Shift+Enter starts a new line.");
  var sendButton = el("button", { type: "submit", class: "wbchat-send" }, "Send");
  form.appendChild(inputLabel);
  form.appendChild(input);
  form.appendChild(hint);
  form.appendChild(sendButton);

  panel.appendChild(header);
  panel.appendChild(log);
  panel.appendChild(typingLine);
  panel.appendChild(alertLine);
  panel.appendChild(offline);
  panel.appendChild(nameRow);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(bubble);

  function mount() { document.body.appendChild(root); }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  // --- opening and closing ---------------------------------------------------------------------

  var unreadCount = 0;
  function isOpen() { return !panel.hidden; }
  function open() {
    panel.hidden = false;
    root.setAttribute("data-state", "open");
    bubble.setAttribute("aria-expanded", "true");
    bubble.setAttribute("aria-label", "Close chat: " + title);
    save(KEY_OPEN, "1");
    unreadCount = 0;
    unread.hidden = true;
    markRead();
    connect();
    input.focus();
    log.scrollTop = log.scrollHeight;
  }
  function shut() {
    panel.hidden = true;
    root.setAttribute("data-state", "closed");
    bubble.setAttribute("aria-expanded", "false");
    bubble.setAttribute("aria-label", "Open chat: " + title);
    save(KEY_OPEN, null);
    bubble.focus();
  }
  bubble.addEventListener("click", function () { if (isOpen()) shut(); else open(); });
  close.addEventListener("click", shut);
  panel.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape") { evt.preventDefault(); shut(); }
  });

  // --- the conversation ------------------------------------------------------------------------

  var shown = {}; // interaction id → true
  var pending = {}; // client id → {text, node} until the server confirms it
  // lastSeen: the newest message this page shows (a reconnect asks for what came after it);
  // a new page asks for the recent conversation. readUpTo (stored): the newest one the visitor
  // had open in front of them, so replies that came while they were away count as new.
  var lastSeen = null;
  var readUpTo = parseInt(load(KEY_LAST) || "", 10) || 0;
  function markRead() {
    if (lastSeen && lastSeen > readUpTo) {
      readUpTo = lastSeen;
      save(KEY_LAST, readUpTo);
    }
  }

  function addLine(direction, author, text, at, extraClass) {
    if (empty.parentNode) empty.parentNode.removeChild(empty);
    var item = el("li", { class: "wbchat-msg wbchat-" + (direction === "in" ? "mine" : "theirs") + (extraClass ? " " + extraClass : "") });
    var meta = el("span", { class: "wbchat-meta" });
    meta.textContent = author + (at ? " · " + at : "");
    var body = el("span", { class: "wbchat-text" });
    body.textContent = text;
    item.appendChild(meta);
    item.appendChild(body);
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    return item;
  }
  function timeOf(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return "";
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function showMessage(frame) {
    if (shown[frame.id]) return;
    shown[frame.id] = true;
    nameRow.hidden = true; // the conversation has begun: the name went with its first message
    var waiting = frame.client_id && pending[frame.client_id];
    if (waiting) {
      waiting.node.classList.remove("wbchat-sending");
      waiting.node.querySelector(".wbchat-meta").textContent = "You · " + timeOf(frame.at);
      delete pending[frame.client_id];
    } else {
      addLine(frame.direction, frame.author, frame.text, timeOf(frame.at));
      if (frame.direction === "out" && !isOpen() && frame.id > readUpTo) {
        unreadCount += 1;
        unread.textContent = String(unreadCount);
        unread.hidden = false;
        bubble.setAttribute("aria-label", "Open chat: " + title + " (" + unreadCount + " new)");
      }
    }
    if (frame.direction === "out") setAgentTyping(null);
    if (!lastSeen || frame.id > lastSeen) lastSeen = frame.id;
    if (isOpen()) markRead();
  }

  function setAgentTyping(name) {
    typingLine.textContent = name ? name + " is typing…" : "";
  }

  // --- the socket ------------------------------------------------------------------------------

  var socket = null;
  var ready = false;
  var retryMs = 1000;
  var retryTimer = null;
  var everConnected = false;

  function setState(kind, text) {
    state.setAttribute("data-connection", kind);
    state.textContent = text;
    root.setAttribute("data-connection", kind);
  }

  function send(frame) {
    if (!socket || !ready) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch (e) {
      return false;
    }
  }

  function connect() {
    if (socket) return;
    window.clearTimeout(retryTimer);
    setState("connecting", "Connecting…");
    var ws;
    try {
      ws = new WebSocket(socketUrl);
    } catch (e) {
      scheduleRetry();
      return;
    }
    socket = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "hello", token: load(KEY_TOKEN), last_seen: lastSeen }));
    };
    ws.onmessage = function (evt) {
      var frame;
      try { frame = JSON.parse(evt.data); } catch (e) { return; }
      if (frame && typeof frame === "object") receive(frame);
    };
    ws.onclose = function (evt) {
      socket = null;
      ready = false;
      setAgentTyping(null);
      if (evt.code === 4401) {
        // A token the server does not accept (expired): start a new conversation.
        save(KEY_TOKEN, null);
        save(KEY_LAST, null);
        save(KEY_EMAIL, null);
        lastSeen = null;
        readUpTo = 0;
        retryMs = 1000;
        window.setTimeout(connect, 0);
        return;
      }
      scheduleRetry();
    };
  }

  function scheduleRetry() {
    // A website the chat is not allowed on is refused at the handshake, which a browser cannot
    // tell from a network error: both wait longer and longer (at most 15 s) between tries.
    setState("offline", everConnected ? "Connection lost. Reconnecting…" : "Cannot reach the chat. Retrying…");
    window.clearTimeout(retryTimer);
    retryTimer = window.setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  }

  function receive(frame) {
    switch (frame.type) {
      case "welcome":
        ready = true;
        everConnected = true;
        retryMs = 1000;
        save(KEY_TOKEN, frame.token);
        setOnline(frame.agents_online);
        // What was written while the socket was away leaves now, with its first id.
        for (var id in pending) send(messageFrame(id, pending[id].text, pending[id].name));
        break;
      case "status":
        setOnline(frame.agents_online);
        break;
      case "message":
        showMessage(frame);
        break;
      case "typing":
        setAgentTyping(frame.typing ? (frame.name || "Support") : null);
        break;
      case "email_saved":
        save(KEY_EMAIL, frame.email);
        offline.hidden = true;
        alertLine.textContent = "";
        addLine("out", "Support", "Thanks! We'll answer you at " + frame.email + ".", "", "wbchat-system");
        break;
      case "error":
        alertLine.textContent = frame.message || "Something went wrong.";
        if (frame.code === "invalid_name") {
          // Nothing was stored: ask for the name again, with the message given back below.
          nameRow.hidden = false;
          nameInput.setAttribute("aria-invalid", "true");
          nameInput.focus();
        }
        if (frame.code === "rate_limited" || frame.code === "too_big" || frame.code === "invalid" ||
            frame.code === "invalid_name") {
          // The oldest unconfirmed message was refused (frames are answered in order) and not
          // stored: take it off the log and give its text back, so nothing typed is lost.
          var oldest = Object.keys(pending)[0];
          if (oldest) {
            if (!input.value) input.value = pending[oldest].text;
            log.removeChild(pending[oldest].node);
            delete pending[oldest];
          }
        }
        break;
    }
  }

  function setOnline(isOnline) {
    if (isOnline) {
      setState("online", "We're online: ask away.");
      offline.hidden = true;
    } else {
      var email = load(KEY_EMAIL);
      setState("away", email ? "We're away: we'll answer you at " + email + "." : "We're away right now.");
      offline.hidden = Boolean(email);
    }
  }

  // --- writing ---------------------------------------------------------------------------------

  var typing = false;
  var typingSentAt = 0;
  var idleTimer = null;

  function stopTyping() {
    window.clearTimeout(idleTimer);
    if (typing) {
      typing = false;
      send({ type: "typing", typing: false });
    }
  }

  input.addEventListener("input", function () {
    var now = Date.now();
    if (!input.value.trim()) { stopTyping(); return; }
    if (!typing || now - typingSentAt >= TYPING_REFRESH_MS) {
      typing = true;
      typingSentAt = now;
      send({ type: "typing", typing: true });
    }
    window.clearTimeout(idleTimer);
    idleTimer = window.setTimeout(stopTyping, TYPING_IDLE_MS);
  });
  input.addEventListener("blur", stopTyping);
  input.addEventListener("keydown", function (evt) {
    if (evt.key === "Enter" && !evt.shiftKey && !evt.isComposing) {
      evt.preventDefault();
      submit();
    }
  });
  form.addEventListener("submit", function (evt) {
    evt.preventDefault();
    submit();
  });

  // The name the visitor gave, while they are still being asked for it ("" otherwise).
  function givenName() {
    return nameRow.hidden ? "" : nameInput.value.trim();
  }
  function messageFrame(id, text, name) {
    var frame = { type: "message", id: id, text: text };
    if (name) frame.name = name;
    return frame;
  }

  nameInput.addEventListener("input", function () { nameInput.removeAttribute("aria-invalid"); });
  nameInput.addEventListener("keydown", function (evt) {
    if (evt.key === "Enter" && !evt.isComposing) {
      evt.preventDefault();
      input.focus();
    }
  });

  function submit() {
    var text = input.value.trim();
    if (!text) return;
    alertLine.textContent = "";
    var id = newId();
    var name = givenName();
    var node = addLine("in", "You", text, "sending…", "wbchat-sending");
    pending[id] = { text: text, node: node, name: name };
    input.value = "";
    stopTyping();
    if (!send(messageFrame(id, text, name))) connect();
    input.focus();
  }

  offline.addEventListener("submit", function (evt) {
    evt.preventDefault();
    var email = emailInput.value.trim();
    if (!email || email.indexOf("@") < 1) {
      alertLine.textContent = "Write your email address, like you@example.com.";
      emailInput.focus();
      return;
    }
    var text = input.value.trim();
    var frame = { type: "email", id: newId(), email: email, text: text };
    var name = givenName();
    if (name) frame.name = name;
    if (send(frame)) {
      if (text) input.value = "";
    } else {
      alertLine.textContent = "Not connected yet; try again in a moment.";
    }
  });

  // A returning visitor sees replies that came while they were away: connect at once.
  if (load(KEY_TOKEN)) {
    connect();
    if (load(KEY_OPEN)) {
      if (document.body) open(); else document.addEventListener("DOMContentLoaded", open);
    }
  }
})();
