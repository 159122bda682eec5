/*
 * chatflow customer widget. Embed it in any page with one tag:
 *
 *   <script src="https://SUPPORT.EXAMPLE/widget.js" defer></script>
 *
 * Optional attributes: data-title="Chat with us", data-open="true" (open at load).
 * It starts a chat with the page's URL, shows public messages live (Server-Sent Events
 * read with fetch, so the chat token travels in a header), marks them read when the panel
 * is open and the page visible, tells the server when the customer leaves the page, and
 * keeps the chat across reloads (the token in this site's localStorage). Everything it
 * shows is set as text, never as HTML, inside a shadow root that the page's styles cannot
 * reach; it needs no inline script or style, so a strict Content-Security-Policy is fine.
 */
(function () {
  "use strict";
  if (window.ChatflowWidget) return; // the tag was included twice

  var script = document.currentScript;
  var base = new URL(script && script.src ? script.src : "/widget.js", location.href).origin;
  var title = (script && script.dataset.title) || "Chat with us";
  var storeKey = "chatflow.widget:" + base;

  var CSS = [
    ":host { all: initial; }",
    "* { box-sizing: border-box; }",
    ".root { position: fixed; right: 16px; bottom: 16px; z-index: 2147483000; font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d2330; }",
    "button, textarea, input { font: inherit; color: inherit; }",
    ":focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }",
    ".launcher { display: inline-flex; align-items: center; gap: 8px; border: none; border-radius: 999px; background: #1f5fbf; color: #fff; padding: 12px 18px; font-weight: 700; cursor: pointer; box-shadow: 0 6px 18px rgba(0,0,0,.25); }",
    ".badge { background: #b3261e; color: #fff; border-radius: 999px; min-width: 1.5em; padding: 0 6px; font-size: 13px; text-align: center; }",
    ".panel { position: absolute; right: 0; bottom: 0; width: 360px; max-width: calc(100vw - 32px); height: 520px; max-height: calc(100vh - 32px); background: #fff; border-radius: 14px; box-shadow: 0 12px 36px rgba(0,0,0,.28); display: flex; flex-direction: column; overflow: hidden; }",
    ".head { display: flex; align-items: center; gap: 8px; background: #1f5fbf; color: #fff; padding: 12px 14px; }",
    ".titles { flex: 1; }",
    ".head h2 { font-size: 16px; margin: 0; }",
    ".head p { margin: 0; font-size: 12px; opacity: .9; }",
    ".close { background: transparent; border: 1px solid rgba(255,255,255,.6); color: #fff; border-radius: 6px; padding: 2px 10px; cursor: pointer; }",
    ".log { list-style: none; margin: 0; padding: 12px; flex: 1; overflow-y: auto; background: #f5f6f8; }",
    ".msg { margin: 0 0 10px; max-width: 85%; }",
    ".msg .who { font-size: 12px; color: #5b6475; margin: 0 0 2px; }",
    ".msg .text { margin: 0; padding: 8px 12px; border-radius: 12px; background: #fff; border: 1px solid #d9dde5; white-space: pre-wrap; overflow-wrap: anywhere; }",
    ".msg.mine { margin-left: auto; }",
    ".msg.mine .who { text-align: right; }",
    ".msg.mine .text { background: #1f5fbf; color: #fff; border-color: #1f5fbf; }",
    ".empty { color: #5b6475; text-align: center; margin-top: 24px; }",
    "form { border-top: 1px solid #d9dde5; padding: 10px 12px; display: grid; gap: 6px; background: #fff; }",
    "label { font-size: 13px; font-weight: 600; }",
    "input, textarea { width: 100%; border: 1px solid #b8bfcc; border-radius: 8px; padding: 8px; background: #fff; }",
    "textarea { resize: none; }",
    ".send { justify-self: end; border: none; border-radius: 8px; background: #1f5fbf; color: #fff; padding: 8px 16px; font-weight: 700; cursor: pointer; }",
    ".error { color: #b3261e; margin: 0; font-size: 13px; min-height: 0; }",
    ".error:empty { display: none; }",
    ".sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }",
    ".new { border: none; background: none; color: #1f5fbf; text-decoration: underline; cursor: pointer; padding: 0; justify-self: start; }",
    "[hidden] { display: none !important; }",
    "@media (max-width: 480px) { .root { right: 8px; bottom: 8px; } .panel { position: fixed; inset: 0; width: 100vw; max-width: none; height: 100%; max-height: none; border-radius: 0; } }",
  ].join("\n");

  // ------------------------------------------------------------------ DOM (text only)

  function h(tag, attrs) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) if (arguments[i]) node.appendChild(arguments[i]);
    return node;
  }

  var host = h("div", { id: "chatflow-widget" });
  var shadow = host.attachShadow({ mode: "open" });
  if (shadow.adoptedStyleSheets !== undefined && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } else {
    shadow.appendChild(h("style", { text: CSS }));
  }

  var badge = h("span", { class: "badge", hidden: "" });
  var launcher = h("button", { type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": "cf-panel" },
    h("span", { text: title }), badge);
  var status = h("p", { text: "We usually answer in a few minutes." });
  var closeBtn = h("button", { type: "button", class: "close", "aria-label": "Close the chat window", text: "Close" });
  var log = h("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var empty = h("li", { class: "empty", text: "Ask us anything: we will answer here." });

  // the first message starts the chat; name and email are optional
  var startForm = h("form", { class: "start", "aria-label": "Start a chat" },
    h("label", { for: "cf-name", text: "Your name (optional)" }),
    h("input", { id: "cf-name", name: "name", autocomplete: "name", maxlength: "200" }),
    h("label", { for: "cf-email", text: "Email (optional: we answer there if you leave)" }),
    h("input", { id: "cf-email", name: "email", type: "email", autocomplete: "email", maxlength: "300" }),
    h("label", { for: "cf-first", text: "Your message" }),
    h("textarea", { id: "cf-first", name: "text", rows: "3", required: "" }),
    h("p", { class: "error", role: "alert" }),
    h("button", { type: "submit", class: "send", text: "Start chat" }));
  var sendForm = h("form", { class: "compose", "aria-label": "Send a message", hidden: "" },
    h("label", { for: "cf-text", class: "sr", text: "Your message" }),
    h("textarea", { id: "cf-text", name: "text", rows: "2", placeholder: "Write a message… (Enter sends)" }),
    h("p", { class: "error", role: "alert" }),
    h("button", { type: "submit", class: "send", text: "Send" }));
  var newChat = h("button", { type: "button", class: "new", hidden: "", text: "Start a new chat" });
  sendForm.appendChild(newChat);

  var panel = h("section", { id: "cf-panel", class: "panel", role: "dialog", "aria-labelledby": "cf-title", hidden: "" },
    h("div", { class: "head" }, h("div", { class: "titles" }, h("h2", { id: "cf-title", text: title }), status), closeBtn),
    log, startForm, sendForm);
  var root = h("div", { class: "root" }, launcher, panel);
  shadow.appendChild(root);

  // ------------------------------------------------------------------ state

  var state = {
    chat: null, // {id, token}
    messages: {}, // rank -> customer message
    readUpTo: 0, // the highest rank the customer has seen
    open: false,
    closed: false,
    stream: null,
  };

  function saved() {
    try {
      return JSON.parse(localStorage.getItem(storeKey) || "null");
    } catch (e) {
      return null;
    }
  }

  function save(chat) {
    try {
      if (chat) localStorage.setItem(storeKey, JSON.stringify(chat));
      else localStorage.removeItem(storeKey);
    } catch (e) { /* storage blocked: the chat lasts for this page only */ }
  }

  function rankOf(m) {
    var i = m.id.lastIndexOf(":r");
    return Number(m.id.slice(i + 2));
  }

  // ------------------------------------------------------------------ HTTP

  function call(method, path, body, keepalive) {
    var headers = { Accept: "application/json" };
    if (state.chat) headers.Authorization = "Bearer " + state.chat.token;
    var init = { method: method, headers: headers, cache: "no-store", keepalive: !!keepalive };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(base + path, init).then(function (res) {
      return res.json().catch(function () { return null; }).then(function (data) {
        if (!res.ok) {
          var err = new Error((data && data.message) || "HTTP " + res.status);
          err.status = res.status;
          err.code = data && data.error;
          throw err;
        }
        return data;
      });
    });
  }

  function chatPath(suffix) {
    return "/api/widget/chats/" + encodeURIComponent(state.chat.id) + (suffix || "");
  }

  // ------------------------------------------------------------------ live messages

  function openStream() {
    if (state.stream) state.stream.stop = true;
    var s = { stop: false, controller: null };
    state.stream = s;
    var retry = 2000;
    var last = null;

    function dispatch(block) {
      var event = "message", id = null, data = [];
      block.split("\n").forEach(function (line) {
        if (!line || line.charAt(0) === ":") return;
        var i = line.indexOf(":");
        var field = i < 0 ? line : line.slice(0, i);
        var value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
        else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
      });
      if (id !== null) last = id;
      if (!data.length) return;
      var payload;
      try { payload = JSON.parse(data.join("\n")); } catch (e) { return; }
      if (event === "message") {
        state.messages[rankOf(payload)] = payload;
      } else if (event === "snapshot") {
        // everything visible up to this id: edits and deletes made meanwhile
        var upTo = Number(id);
        Object.keys(state.messages).forEach(function (r) { if (Number(r) <= upTo) delete state.messages[r]; });
        payload.messages.forEach(function (m) { state.messages[rankOf(m)] = m; });
      }
      render();
    }

    function loop() {
      if (s.stop || !state.chat) return;
      s.controller = new AbortController();
      var headers = { Accept: "text/event-stream", Authorization: "Bearer " + state.chat.token };
      if (last) headers["Last-Event-ID"] = last;
      fetch(base + chatPath("/stream"), { headers: headers, signal: s.controller.signal, cache: "no-store" })
        .then(function (res) {
          if (res.status === 404 || res.status === 401) {
            forget();
            return "fatal";
          }
          if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
          var reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          var buffer = "";
          function pump() {
            return reader.read().then(function (r) {
              if (r.done) return;
              buffer += r.value.replace(/\r\n?/g, "\n");
              var cut;
              while ((cut = buffer.indexOf("\n\n")) >= 0) {
                dispatch(buffer.slice(0, cut));
                buffer = buffer.slice(cut + 2);
              }
              return pump();
            });
          }
          return pump();
        })
        .catch(function () { /* network: retry below */ })
        .then(function (result) {
          if (result === "fatal" || s.stop) return;
          setTimeout(loop, retry);
        });
    }
    loop();
  }

  function stopStream() {
    if (state.stream) {
      state.stream.stop = true;
      if (state.stream.controller) state.stream.controller.abort();
      state.stream = null;
    }
  }

  // ------------------------------------------------------------------ rendering

  function sortedRanks() {
    return Object.keys(state.messages).map(Number).sort(function (a, b) { return a - b; });
  }

  function render() {
    var ranks = sortedRanks();
    var items = ranks.map(function (r) {
      var m = state.messages[r];
      var mine = m.author === "customer";
      var who = mine ? "You" : m.author === "agent" ? (m.author_id ? m.author_id + " (support)" : "Support") : "Support";
      var time = new Date(m.at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      var li = h("li", { class: "msg" + (mine ? " mine" : ""), "data-rank": String(r) },
        h("p", { class: "who", text: who + " · " + time + (m.edited ? " · edited" : "") }),
        h("p", { class: "text", text: m.text }));
      return li;
    });
    if (!items.length) items = [empty];
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.replaceChildren.apply(log, items);
    if (atBottom) log.scrollTop = log.scrollHeight;
    startForm.hidden = !!state.chat;
    sendForm.hidden = !state.chat;
    newChat.hidden = !state.closed;
    markRead();
    renderBadge();
  }

  function unreadCount() {
    var n = 0;
    sortedRanks().forEach(function (r) {
      if (r > state.readUpTo && state.messages[r].author !== "customer") n++;
    });
    return n;
  }

  function renderBadge() {
    var n = state.open ? 0 : unreadCount();
    badge.hidden = n === 0;
    badge.textContent = String(n);
    launcher.setAttribute("aria-label", title + (n ? ", " + n + " unread" : ""));
  }

  // "read" means seen: the panel is open and the page is in front of the customer
  function markRead() {
    if (!state.chat || !state.open || document.visibilityState !== "visible") return;
    var ranks = sortedRanks();
    var top = ranks.length ? ranks[ranks.length - 1] : 0;
    var unseen = unreadCount() > 0;
    state.readUpTo = Math.max(state.readUpTo, top);
    if (unseen) call("POST", chatPath("/read")).catch(function () {});
  }

  // ------------------------------------------------------------------ panel

  function setOpen(open, focus) {
    state.open = open;
    try { sessionStorage.setItem(storeKey + ":open", open ? "1" : ""); } catch (e) { /* blocked */ }
    panel.hidden = !open;
    launcher.hidden = open;
    launcher.setAttribute("aria-expanded", String(open));
    if (open) {
      log.scrollTop = log.scrollHeight;
      var field = state.chat ? sendForm.elements.text : startForm.elements.name;
      if (focus !== false) field.focus();
      markRead();
    } else if (focus !== false) {
      launcher.focus();
    }
    renderBadge();
  }

  launcher.addEventListener("click", function () { setOpen(true); });
  closeBtn.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { ev.preventDefault(); setOpen(false); }
  });

  function enterSends(form) {
    form.elements.text.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
  }
  enterSends(sendForm);

  function showError(form, err) {
    form.querySelector(".error").textContent = err ? err.message : "";
  }

  startForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = startForm.elements;
    var text = f.text.value.trim();
    if (!text) {
      showError(startForm, new Error("Write a message to start the chat."));
      f.text.focus();
      return;
    }
    var customer = {};
    if (f.name.value.trim()) customer.name = f.name.value.trim();
    if (f.email.value.trim()) customer.email = f.email.value.trim();
    var body = { text: text, page_url: location.href };
    if (customer.name || customer.email) body.customer = customer;
    showError(startForm, null);
    call("POST", "/api/widget/chats", body).then(function (data) {
      state.chat = { id: data.chat.id, token: data.token };
      state.closed = false;
      save(state.chat);
      startForm.reset();
      setMessages(data.chat.messages);
      openStream();
      sendForm.elements.text.focus();
    }, function (err) {
      showError(startForm, err.status === 400 ? new Error("Please check your email address.") : err);
    });
  });

  sendForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var area = sendForm.elements.text;
    var text = area.value.trim();
    if (!text || !state.chat) return;
    showError(sendForm, null);
    call("POST", chatPath("/messages"), { text: text }).then(function (chat) {
      area.value = "";
      state.closed = chat.status === "closed";
      setMessages(chat.messages);
    }, function (err) {
      if (err.code === "chat_closed") state.closed = true;
      showError(sendForm, err.code === "chat_closed" ? new Error("This chat was closed.") : err);
      render();
    });
  });

  newChat.addEventListener("click", function () {
    forget();
    startForm.elements.name.focus();
  });

  function setMessages(list) {
    state.messages = {};
    list.forEach(function (m) { state.messages[rankOf(m)] = m; });
    render();
  }

  function forget() {
    stopStream();
    state.chat = null;
    state.messages = {};
    state.readUpTo = 0;
    state.closed = false;
    save(null);
    render();
  }

  // ------------------------------------------------------------------ presence

  function presence(online, keepalive) {
    if (!state.chat) return;
    call("POST", chatPath("/presence"), { online: online }, keepalive).catch(function () {});
  }

  window.addEventListener("pagehide", function () {
    presence(false, true); // keepalive: the request outlives the page
    stopStream();
  });
  window.addEventListener("pageshow", function (ev) {
    if (ev.persisted && state.chat) { // back from the back/forward cache
      presence(true);
      openStream();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") markRead();
  });

  // ------------------------------------------------------------------ start

  function resume() {
    var chat = saved();
    if (!chat || !chat.id || !chat.token) return render();
    state.chat = chat;
    call("GET", chatPath()).then(function (data) {
      state.closed = data.status === "closed";
      // what the server counts as unread stays unread until the customer opens the panel
      var theirs = data.messages.filter(function (m) { return m.author !== "customer"; });
      var unread = theirs.slice(theirs.length - data.unread);
      state.readUpTo = unread.length ? rankOf(unread[0]) - 1 : Infinity;
      setMessages(data.messages);
      if (state.readUpTo === Infinity) state.readUpTo = sortedRanks().slice(-1)[0] || 0;
      presence(true);
      openStream();
    }, function (err) {
      if (err.status === 404 || err.status === 401) forget();
      else render();
    });
  }

  function mount() {
    document.body.appendChild(host);
    resume();
    var wasOpen = false;
    try { wasOpen = sessionStorage.getItem(storeKey + ":open") === "1"; } catch (e) { /* blocked */ }
    if (wasOpen || (script && script.dataset.open === "true")) setOpen(true, false);
  }

  window.ChatflowWidget = {
    open: function () { setOpen(true); },
    close: function () { setOpen(false); },
  };

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
