// The signed-in agent's token and the API calls made with it (console and rules page).
// The token stays in this browser's localStorage until "Sign out".

const KEY = "chatflow.agentToken";

export function token() {
  return localStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) localStorage.setItem(KEY, value);
  else localStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_error";
    this.details = (body && body.details) || {};
  }
}

// A JSON request with the agent's bearer token; resolves to the parsed body or throws ApiError.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: "network", message: "the server cannot be reached" });
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// Text and children for a new element: el("li", {class: "x"}, "text", child). Text goes in
// as text nodes, never as HTML.
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// A link only for http(s) URLs: a customer-supplied page URL must not become javascript:.
export function safeLink(url) {
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") {
      return el("a", { href: u.href, target: "_blank", rel: "noopener noreferrer" }, url);
    }
  } catch (e) { /* not a URL: shown as text */ }
  return document.createTextNode(url);
}

export function formatTime(epochSeconds) {
  if (epochSeconds === null || epochSeconds === undefined) return "";
  const d = new Date(epochSeconds * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

// ------------------------------------------------------------------ signing in (every page)

const byId = (id) => document.getElementById(id);

// Wires a page's sign-in form (#signin-form, #signin-token, #signin-error) and its
// "Sign out" button (#signout) around `start`, which runs once a token is set; returns
// showSignIn(message), which puts the form back. `empty` is said when the form is sent
// empty; `onSignOut` runs before the page reloads.
export function wireSignIn(start, { empty = "", onSignOut = () => {} } = {}) {
  function showSignIn(message) {
    byId("app").hidden = true;
    byId("signin").hidden = false;
    byId("signin-error").textContent = message || "";
    byId("signin-token").focus();
  }
  byId("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = byId("signin-token").value.trim();
    if (!value) {
      byId("signin-error").textContent = empty;
      return;
    }
    setToken(value);
    byId("signin-token").value = "";
    await start();
  });
  byId("signout").addEventListener("click", () => {
    setToken(null);
    onSignOut();
    location.reload();
  });
  return showSignIn;
}

// The signed-in agent (GET /api/me), the page shown; or null with the sign-in form back
// (no token, a refused one, or with `admin` a token that is not an admin's).
export async function signedIn(showSignIn, { admin = false, refused = "That token is not valid." } = {}) {
  if (!token()) {
    showSignIn();
    return null;
  }
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) setToken(null);
    showSignIn(e instanceof ApiError && e.status === 401 ? refused : e.message);
    return null;
  }
  if (admin && !me.is_admin) {
    showSignIn(`${me.id} is not an admin: this page needs an admin token.`);
    return null;
  }
  byId("signin").hidden = true;
  byId("app").hidden = false;
  return me;
}
