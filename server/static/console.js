// The operator console: sign in with a token, the chats this agent sees, one chat with its
// commands, composer (replies, private notes with @mentions, canned responses on Shift+3,
// articles on Shift+8), reassignment, and live notifications from /api/stream.
import { api, el, formatTime, safeLink, setToken, signedIn, wireSignIn } from "./session.js";
import { createNotifications, TEMPLATE_LABELS, toast } from "./notifications.js";
import { createSuggester } from "./suggest.js";

const $ = (id) => document.getElementById(id);

const POLL_MS = 4000;

const state = {
  me: null,
  agents: [],
  canned: [],
  chats: [],
  chat: null, // the open chat with its messages
  chatId: null,
  stream: null,
  pollTimer: null,
  attachment: null, // {slug, title}: an article to send
  cannedPicked: null, // {shortcut, text}: sent as {canned} when the text is left as inserted
  editing: null, // position of the message being edited
};

// ------------------------------------------------------------------ sign in

async function start() {
  state.me = await signedIn(showSignIn, { refused: "That token is not valid any more." });
  if (!state.me) return;
  renderMe();
  const [agents, canned] = await Promise.all([
    api("GET", "/api/agents").catch(() => ({ agents: [] })),
    api("GET", "/api/canned").catch(() => ({ canned: [] })),
  ]);
  state.agents = agents.agents;
  state.canned = canned.canned;
  renderAssignOptions();
  updateComposerHint();
  await refreshList();
  startNotifications();
  window.addEventListener("hashchange", openFromHash);
  await openFromHash();
  schedulePoll();
}

const showSignIn = wireSignIn(start, {
  empty: "Enter your agent token.",
  onSignOut: () => {
    if (state.stream) state.stream.close();
    clearTimeout(state.pollTimer);
    location.hash = "";
  },
});

function renderMe() {
  $("me-name").textContent = state.me.name ? `${state.me.name} (${state.me.id})` : state.me.id;
  $("me-status").value = state.me.status;
  $("me-shortcut").value = state.me.reply_shortcut || "enter";
  $("rules-link").hidden = !state.me.is_admin;
  $("analytics-link").hidden = !state.me.is_admin;
}

$("me-status").addEventListener("change", async (ev) => {
  state.me = await guard(api("PATCH", "/api/me", { status: ev.target.value })) || state.me;
  renderMe();
});

$("me-shortcut").addEventListener("change", async (ev) => {
  state.me = await guard(api("PATCH", "/api/me", { reply_shortcut: ev.target.value })) || state.me;
  renderMe();
  updateComposerHint();
});

// ------------------------------------------------------------------ chat list

async function refreshList() {
  const filter = $("chat-filter").value;
  const data = await api("GET", "/api/chats" + (filter ? `?status=${filter}` : "")).catch(() => null);
  if (!data) return;
  state.chats = data.chats;
  renderList();
}

$("chat-filter").addEventListener("change", refreshList);

function customerName(chat) {
  return chat.customer.name || chat.customer.email || `Visitor ${chat.customer.id.slice(-4)}`;
}

function renderList() {
  const list = $("chat-list");
  const items = state.chats.map((c) => {
    const responsible = c.assignee ? (c.assignee === state.me.id ? "You are responsible" : `Responsible: ${c.assignee}`)
      : "Unassigned";
    const link = el("a", {
      href: `#/chats/${encodeURIComponent(c.id)}`,
      class: "chat-link",
      "aria-current": c.id === state.chatId ? "page" : null,
      dataset: { chatId: c.id },
    },
    el("span", { class: "chat-name" }, customerName(c)),
    el("span", { class: "chat-time" }, formatTime(c.last_activity_at)),
    el("span", { class: "chat-who" }, responsible),
    c.unread ? el("span", { class: "count", "aria-label": `${c.unread} unread` }, String(c.unread)) : el("span"),
    el("span", { class: "chat-flags" },
      c.status === "closed" ? "Closed" : c.customer.online ? "Online" : "Offline",
      c.locked_by ? ` · Locked by ${c.locked_by}` : "",
      c.tags.length ? ` · ${c.tags.join(", ")}` : ""));
    return el("li", { class: c.unread ? "unread" : null }, link);
  });
  list.replaceChildren(...items);
  $("chat-list-empty").hidden = items.length > 0;
}

// ------------------------------------------------------------------ one chat

async function openFromHash() {
  const m = location.hash.match(/^#\/chats\/(.+)$/);
  const id = m ? decodeURIComponent(m[1]) : null;
  if (id !== state.chatId) {
    state.chatId = id;
    state.chat = null;
    state.chatSignature = null;
    state.editing = null;
    clearAttachment();
    $("composer-text").value = "";
    $("chat-error").textContent = "";
  }
  document.body.classList.toggle("chat-open", !!id);
  renderList();
  if (!id) {
    $("chat").hidden = true;
    $("details").hidden = true;
    $("no-chat").hidden = false;
    return;
  }
  await loadChat();
  if (state.chat) $("main").focus({ preventScroll: true });
}

async function loadChat() {
  const id = state.chatId;
  if (!id) return;
  let chat;
  try {
    chat = await api("GET", `/api/chats/${encodeURIComponent(id)}`);
  } catch (e) {
    if (id !== state.chatId) return;
    $("chat").hidden = true;
    $("details").hidden = true;
    $("no-chat").hidden = false;
    $("no-chat").textContent = e.code === "unknown_chat" ? "No such chat, or you cannot see it." : e.message;
    return;
  }
  if (id !== state.chatId) return;
  setChat(chat);
  if (chat.unread > 0 && document.visibilityState === "visible") {
    const read = await api("POST", `/api/chats/${encodeURIComponent(id)}/read`).catch(() => null);
    if (read && id === state.chatId) setChat(read);
    refreshList();
  }
}

function setChat(chat) {
  // the poll brings the same chat back most of the time: leave the page (and the focus) alone
  const signature = JSON.stringify(chat);
  if (state.chat && signature === state.chatSignature) return;
  state.chatSignature = signature;
  const first = !state.chat || state.chat.id !== chat.id;
  const log = $("messages");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  state.chat = chat;
  $("no-chat").hidden = true;
  $("chat").hidden = false;
  $("details").hidden = false;
  renderChatBar();
  renderMessages();
  renderDetails();
  if (first || atBottom) log.scrollTop = log.scrollHeight;
}

function renderChatBar() {
  const c = state.chat;
  const me = state.me.id;
  $("chat-title").textContent = customerName(c);
  $("chat-sub").replaceChildren(
    c.customer.online ? "Online" : "Offline",
    " · ",
    c.status === "open" ? "Open" : "Closed",
    " · ",
    c.assignee ? (c.assignee === me ? "You are responsible" : `Responsible: ${c.assignee}`) : "Unassigned",
    c.page_url ? " · " : "",
    c.page_url ? safeLink(c.page_url) : "",
  );
  const open = c.status === "open";
  $("join").hidden = !open || c.assignee === me;
  $("lock").hidden = !open || c.assignee !== me || !!c.locked_by;
  $("unlock").hidden = !open || c.locked_by !== me;
  $("subscribe").hidden = c.subscribed;
  $("unsubscribe").hidden = !c.subscribed;
  $("close-chat").hidden = !open;
  $("reopen-chat").hidden = open;
  const banner = $("chat-banner");
  if (c.locked_by && c.locked_by !== me) {
    banner.textContent = `${c.locked_by} is working on this chat (locked): you can write private notes.`;
    banner.hidden = false;
  } else if (open && c.assignee !== me) {
    banner.textContent = "Join the chat to reply to the customer; anyone can write private notes.";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

function authorLabel(m) {
  const c = state.chat;
  if (m.author === "customer") return customerName(c) + (m.via === "email" ? " (by email)" : "");
  if (m.author === "agent") return m.author_id === state.me.id ? "You" : m.author_id;
  if (m.author === "bot") return `Rule ${m.author_id}`;
  return m.author;
}

function renderMessages() {
  const c = state.chat;
  const me = state.me.id;
  const items = c.messages.map((m) => {
    const own = m.author === "agent" && m.author_id === me && !m.deleted;
    const classes = ["msg", `by-${m.author}`, m.kind === "note" ? "note" : "", own ? "own" : "", m.deleted ? "deleted" : ""];
    const head = el("p", { class: "msg-head" },
      el("span", { class: "msg-author" }, authorLabel(m)),
      m.kind === "note" ? el("span", { class: "tag-note" }, "Private note") : null,
      m.article ? el("span", { class: "tag-article" }, `Article: ${m.article}`) : null,
      el("time", { class: "msg-time" }, formatTime(m.at)),
      m.edited ? el("span", { class: "muted" }, "(edited)") : null);
    let body;
    if (m.deleted) body = el("p", { class: "msg-text muted" }, "This message was deleted.");
    else if (state.editing === m.position && own) body = editForm(m);
    else body = el("p", { class: "msg-text" }, m.text);
    const actions = own && state.editing !== m.position ? el("p", { class: "msg-actions" },
      el("button", { type: "button", class: "link", on: { click: () => startEdit(m.position) },
        "aria-label": `Edit message ${m.position}` }, "Edit"),
      el("button", { type: "button", class: "link danger", on: { click: () => deleteMessage(m) },
        "aria-label": `Delete message ${m.position}` }, "Delete")) : null;
    return el("li", { class: classes.filter(Boolean).join(" "), dataset: { position: m.position } }, head, body, actions);
  });
  $("messages").replaceChildren(...items);
  if (state.editing !== null) {
    const box = document.querySelector(".edit-form textarea");
    if (box && document.activeElement !== box) box.focus();
  }
}

function editForm(m) {
  const id = `edit-${m.position}`;
  const area = el("textarea", { id, rows: 3 });
  area.value = m.text;
  const form = el("form", { class: "edit-form" },
    el("label", { for: id }, "Edit message"),
    area,
    el("button", { type: "submit", class: "primary" }, "Save"),
    el("button", { type: "button", on: { click: cancelEdit } }, "Cancel"));
  area.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { ev.preventDefault(); cancelEdit(); }
    else if (isSendKey(ev)) { ev.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = area.value.trim();
    if (!text) return;
    const chat = await guard(api("PATCH", `/api/chats/${encodeURIComponent(state.chat.id)}/messages/${m.position}`, { text }));
    if (chat) {
      state.editing = null;
      setChat(chat);
      $("composer-text").focus();
    }
  });
  return form;
}

function startEdit(position) {
  state.editing = position;
  state.chatSignature = null;
  renderMessages();
}

function cancelEdit() {
  const position = state.editing;
  state.editing = null;
  state.chatSignature = null;
  renderMessages();
  const btn = document.querySelector(`li[data-position="${position}"] .msg-actions button`);
  if (btn) btn.focus();
}

async function deleteMessage(m) {
  if (!window.confirm("Delete this message? The customer will no longer see it.")) return;
  const chat = await guard(api("DELETE", `/api/chats/${encodeURIComponent(state.chat.id)}/messages/${m.position}`));
  if (chat) setChat(chat);
}

function renderDetails() {
  const c = state.chat;
  const facts = [
    ["Chat", c.id],
    ["Customer", [customerName(c), c.customer.email && c.customer.email !== customerName(c) ? ` <${c.customer.email}>` : ""]],
    ["Presence", c.customer.online ? "Online" : "Offline (left the page)"],
    ["Responsible", c.assignee || "nobody"],
    ["Department", c.department || "—"],
    ["Locked by", c.locked_by || "—"],
    ["Subscribers", c.subscribers.length ? c.subscribers.join(", ") : "—"],
    ["Tags", c.tags.length ? c.tags.join(", ") : "—"],
    ["Channel", c.channel],
    ["Page", c.page_url ? safeLink(c.page_url) : "—"],
    ["Started", formatTime(c.created_at)],
  ];
  for (const [k, v] of Object.entries(c.fields || {})) facts.push([k, typeof v === "string" ? v : JSON.stringify(v)]);
  $("details-list").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const select = $("assign-agent");
  if (c.assignee && [...select.options].some((o) => o.value === c.assignee)) select.value = c.assignee;
  $("trace-link-wrap").hidden = !state.me.is_admin;
  $("trace-link").href = `/rules#trace=${encodeURIComponent(c.id)}`;
}

function renderAssignOptions() {
  $("assign-agent").replaceChildren(...state.agents.map((a) =>
    el("option", { value: a.id }, `${a.name || a.id}${a.name ? ` (${a.id})` : ""} — ${a.status}`)));
  const departments = [...new Set(state.agents.flatMap((a) => a.departments || []))].sort();
  $("assign-department").replaceChildren(...departments.map((d) => el("option", { value: d }, d)));
  $("assign-department-form").hidden = departments.length === 0;
}

$("assign-agent-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const agent = $("assign-agent").value;
  if (!agent || !state.chat) return;
  await chatCommand("assign", { agent }, `Assigned to ${agent}.`);
});

$("assign-department-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const department = $("assign-department").value;
  if (!department || !state.chat) return;
  const body = { department };
  if ($("assign-strategy").value) body.by = $("assign-strategy").value;
  await chatCommand("assign", body, `Assigned to ${department}.`);
});

async function chatCommand(command, body, done) {
  $("chat-error").textContent = "";
  const chat = await guard(api("POST", `/api/chats/${encodeURIComponent(state.chat.id)}/${command}`, body));
  if (chat) {
    setChat(chat);
    refreshList();
    if (done) toast(done);
  }
  return chat;
}

for (const [id, command] of [["join", "join"], ["lock", "lock"], ["unlock", "unlock"], ["subscribe", "subscribe"],
  ["unsubscribe", "unsubscribe"], ["close-chat", "close"], ["reopen-chat", "reopen"]]) {
  $(id).addEventListener("click", async () => {
    const chat = await chatCommand(command);
    if (!chat) return;
    // keep the keyboard focus on the bar: the pressed button may have just been hidden
    const next = [...document.querySelectorAll(".chat-actions button")].find((b) => !b.hidden);
    if (command === "join") $("composer-text").focus();
    else if ($(id).hidden && next) next.focus();
  });
}

// ------------------------------------------------------------------ composer

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function isSendKey(ev) {
  if (ev.key !== "Enter" || ev.isComposing) return false;
  const mod = ev.ctrlKey || ev.metaKey;
  return (state.me.reply_shortcut === "ctrl_enter") ? mod : !ev.shiftKey && !mod && !ev.altKey;
}

function updateComposerHint() {
  if (!state.me) return;
  const send = state.me.reply_shortcut === "ctrl_enter" ? "Ctrl/Cmd+Enter sends, Enter starts a new line"
    : "Enter sends, Shift+Enter starts a new line";
  const note = mode() === "note";
  $("composer-hint").textContent = `${send} · # (Shift+3) canned responses · * (Shift+8) articles`
    + (note ? " · @ mentions an agent" : "");
  $("composer-label").textContent = note ? "Private note (agents only)" : "Reply to the customer";
  $("composer").classList.toggle("note-mode", note);
  $("send").textContent = note ? "Add note" : "Send";
  $("composer-text").placeholder = note ? "Private note: only agents see it. @ to mention someone"
    : "Reply to the customer";
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    updateComposerHint();
    if (mode() === "note") clearAttachment();
  });
}

const suggester = createSuggester({
  input: $("composer-text"),
  list: $("suggestions"),
  triggers: {
    "#": { key: "Digit3", source: cannedSuggestions, pick: pickCanned },
    "*": { key: "Digit8", source: articleSuggestions, pick: pickArticle },
    "@": { source: mentionSuggestions, pick: pickMention, when: () => mode() === "note", typed: true },
  },
});

function cannedSuggestions(query) {
  const q = query.toLowerCase();
  return state.canned
    .filter((c) => c.shortcut.toLowerCase().startsWith(q) || c.text.toLowerCase().includes(q))
    .slice(0, 8)
    .map((c) => ({ value: c, label: `#${c.shortcut}`, detail: c.text }));
}

async function articleSuggestions(query) {
  const data = await api("GET", `/api/articles?q=${encodeURIComponent(query)}`).catch(() => ({ articles: [] }));
  return data.articles.slice(0, 8).map((a) => ({ value: a, label: a.title, detail: a.slug }));
}

function mentionSuggestions(query) {
  const q = query.toLowerCase();
  return state.agents
    .filter((a) => a.id.toLowerCase().startsWith(q) || (a.name || "").toLowerCase().startsWith(q))
    .slice(0, 8)
    .map((a) => ({ value: a, label: `@${a.id}`, detail: a.name || "" }));
}

function pickCanned(c, replace) {
  replace(c.text);
  if (mode() === "reply") state.cannedPicked = { shortcut: c.shortcut, text: $("composer-text").value };
}

function pickArticle(a, replace) {
  if (mode() === "note") {
    replace(`${a.title}${a.url ? ` (${a.url})` : ""} `);
    return;
  }
  replace("");
  state.attachment = { slug: a.slug, title: a.title };
  $("attachment-text").textContent = `Article to send: ${a.title}`;
  $("attachment").hidden = false;
}

function pickMention(a, replace) {
  replace(`@${a.id} `);
}

function clearAttachment() {
  state.attachment = null;
  $("attachment").hidden = true;
  $("attachment-text").textContent = "";
}

$("attachment-remove").addEventListener("click", () => {
  clearAttachment();
  $("composer-text").focus();
});

$("composer-text").addEventListener("keydown", (ev) => {
  if (suggester.handleKey(ev)) return;
  if (isSendKey(ev)) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

$("composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!state.chat) return;
  const area = $("composer-text");
  const text = area.value.trim();
  const path = `/api/chats/${encodeURIComponent(state.chat.id)}`;
  $("chat-error").textContent = "";
  let chat = null;
  if (mode() === "note") {
    if (!text) return;
    chat = await guard(api("POST", `${path}/note`, { text }));
  } else {
    if (!text && !state.attachment) return;
    if (text) {
      const canned = state.cannedPicked && state.cannedPicked.text.trim() === text ? state.cannedPicked.shortcut : null;
      chat = await guard(api("POST", `${path}/reply`, canned ? { canned } : { text }));
      if (!chat) return;
      area.value = "";
    }
    if (state.attachment) {
      chat = await guard(api("POST", `${path}/reply`, { article: state.attachment.slug })) || chat;
      if (chat) clearAttachment();
    }
  }
  if (chat) {
    area.value = "";
    state.cannedPicked = null;
    suggester.close();
    setChat(chat);
    $("messages").scrollTop = $("messages").scrollHeight;
    refreshList();
  }
  area.focus();
});

// Show an API refusal where the agent is looking; resolve to null.
async function guard(promise) {
  try {
    return await promise;
  } catch (e) {
    const hints = {
      not_joined: "Join the chat first to reply.",
      locked: "Another agent locked this chat.",
      chat_closed: "The chat is closed: reopen it first.",
      not_author: "You can only change your own messages.",
    };
    $("chat-error").textContent = `${e.message}${hints[e.code] ? ` — ${hints[e.code]}` : ""}`;
    if (e.status === 401) {
      setToken(null);
      showSignIn("Your token is no longer valid.");
    }
    return null;
  }
}

// ------------------------------------------------------------------ notifications

function notificationText(n) {
  const chat = state.chats.find((c) => c.id === n.chat_id) || (state.chat && state.chat.id === n.chat_id && state.chat);
  const label = TEMPLATE_LABELS[n.template] || n.template;
  return [label, chat ? customerName(chat) : null, n.text || null].filter(Boolean).join(" — ");
}

function startNotifications() {
  const notifications = createNotifications({
    agentId: state.me.id,
    describe: notificationText,
    onNotification: (n) => {
      if (n.chat_id && n.chat_id === state.chatId) loadChat();
      return refreshList(); // the toast names the chat's customer
    },
    onFatal: (status) => { if (status === 401) showSignIn("Your token is no longer valid."); },
  });
  notifications.start().then((stream) => { state.stream = stream; });
}

// ------------------------------------------------------------------ polling
// The agent stream carries this agent's notifications only; other changes (a colleague's
// reply, a chat this agent is not notified about) are picked up by a light poll.

function schedulePoll() {
  clearTimeout(state.pollTimer);
  state.pollTimer = setTimeout(async () => {
    if (document.visibilityState === "visible" && state.editing === null) {
      await refreshList();
      if (state.chatId) await loadChat();
    }
    schedulePoll();
  }, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.chatId) loadChat();
});

start();
