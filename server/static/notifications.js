// The agent's notifications in the console: the bell with its unread count and panel, the
// toasts, and the live feed from /api/stream (starting after the newest one already seen,
// so a reload does not replay old ones as toasts).
import { api, el, formatTime, token } from "./session.js";
import { openStream } from "./event_stream.js";

const $ = (id) => document.getElementById(id);

export const TEMPLATE_LABELS = {
  new_chat: "New chat",
  new_message: "New message",
  assigned: "Assigned to you",
  mention: "You were mentioned",
  unread_messages: "Unread customer messages",
  unattended: "Customer waiting",
  sla_due_soon: "SLA target due soon",
  sla_breached: "SLA target missed",
  notification: "Notification",
};

// agentId: whose; describe(n): the text of a notification; onNotification(n): a promise
// settled once the page has caught up with it (the toast waits for it); onFatal(status).
export function createNotifications({ agentId, describe, onNotification, onFatal }) {
  const lastSeenKey = `chatflow.lastNotification.${agentId}`;
  let unread = [];
  let last = 0;
  const seen = new Set();  // ids this page showed from the stream (it may resend one after a reconnect)

  async function start() {
    const data = await api("GET", "/api/notifications?unread=1").catch(() => ({ notifications: [] }));
    unread = data.notifications;
    last = Number(localStorage.getItem(lastSeenKey) || 0);
    for (const n of unread) last = Math.max(last, n.id);
    if (!last) {
      // first sign-in in this browser with nothing unread: start after the newest one
      for (let after = 0, page = 0; page < 50; page++) {
        const more = await api("GET", `/api/notifications?after=${after}`).catch(() => ({ notifications: [] }));
        if (!more.notifications.length) break;
        after = more.notifications[more.notifications.length - 1].id;
        last = after;
        if (more.notifications.length < 1000) break;
      }
    }
    render();
    return openStream("/api/stream", {
      headers: { Authorization: `Bearer ${token()}` },
      lastEventId: last,
      onEvent: (event, n) => {
        // a notification committed late arrives below the newest one: keep it, once
        if (event !== "notification" || seen.has(n.id) || unread.some((u) => u.id === n.id)) return;
        seen.add(n.id);
        if (seen.size > 1000) seen.delete(seen.values().next().value);
        last = Math.max(last, n.id);
        localStorage.setItem(lastSeenKey, String(last));
        unread.push(n);
        Promise.resolve(onNotification(n)).finally(() => {
          render();
          toast(describe(n), n.chat_id, n.template);
        });
      },
      onState: (s) => document.body.classList.toggle("offline", s !== "open"),
      onFatal,
    });
  }

  function render() {
    const count = unread.length;
    $("bell-count").hidden = count === 0;
    $("bell-count").textContent = String(count);
    $("bell").setAttribute("aria-label", `Notifications, ${count} unread`);
    const items = unread.slice().reverse().map((n) => el("li", { class: `notification t-${n.template}` },
      el("span", {}, describe(n)),
      " ",
      n.chat_id ? el("a", { href: `#/chats/${encodeURIComponent(n.chat_id)}` }, "Open chat") : null,
      el("span", { class: "muted" }, ` ${formatTime(n.at)}`)));
    $("notification-list").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "Nothing new.")]));
  }

  function setPanel(open, focusBell) {
    $("notifications").hidden = !open;
    $("bell").setAttribute("aria-expanded", String(open));
    if (open) $("notifications-read").focus();
    else if (focusBell) $("bell").focus();
  }

  $("bell").addEventListener("click", () => setPanel($("notifications").hidden));
  $("notifications").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") setPanel(false, true);
  });
  $("notification-list").addEventListener("click", (ev) => {
    if (ev.target.closest("a")) setPanel(false);
  });
  $("notifications-read").addEventListener("click", async () => {
    await api("POST", "/api/notifications/read").catch(() => null);
    unread = [];
    render();
  });

  return { start, toast };
}

export function toast(text, chatId, template) {
  const box = $("toasts");
  const item = el("div", { class: `toast${template ? ` t-${template}` : ""}` },
    el("span", {}, text),
    chatId ? el("a", { href: `#/chats/${encodeURIComponent(chatId)}` }, "Open") : null,
    el("button", { type: "button", class: "link", "aria-label": "Dismiss", on: { click: () => item.remove() } }, "×"));
  box.append(item);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => item.remove(), 12000);
}
