// The analytics page (admins): a period and chat filters, the overview's figures as
// tiles, the chats per day as a bar chart (and a table of the same numbers), and the
// figures per agent and per rule — all from GET /api/analytics/report and /daily.
// A refused parameter (400, details.parameter) is shown at its field.
import { api, ApiError, el, setToken, signedIn, wireSignIn } from "./session.js";
import { renderBarChart } from "./bar_chart.js";

const $ = (id) => document.getElementById(id);

const FIELDS = { from: "f-from", to: "f-to", channel: "f-channel", department: "f-department",
  agent: "f-agent", wait_minutes: "f-wait" };
const DEFAULT_DAYS = 7;
const SERIES = [
  { key: "started", label: "Started" },
  { key: "answered", label: "Answered" },
  { key: "closed", label: "Closed" },
];

let requestSeq = 0;  // only the answer to the latest request is shown

// ------------------------------------------------------------------ sign in

async function start() {
  const me = await signedIn(showSignIn, { admin: true });
  if (!me) return;
  $("me-name").textContent = me.id;
  setFields(paramsFromHash() || defaults());
  await Promise.all([loadAgents(), update()]);
}

const showSignIn = wireSignIn(start);

// ------------------------------------------------------------------ the filters

// The last seven days by the service's clock (the page is served with its "today").
function defaults() {
  const today = $("app").dataset.today;
  const from = new Date(`${today}T00:00:00Z`);
  from.setUTCDate(from.getUTCDate() - (DEFAULT_DAYS - 1));
  return { from: from.toISOString().slice(0, 10), to: today, wait_minutes: "10" };
}

function paramsFromHash() {
  if (location.hash.length < 2) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const out = {};
  for (const name of Object.keys(FIELDS)) if (params.has(name)) out[name] = params.get(name);
  return Object.keys(out).length ? out : null;
}

function setFields(values) {
  for (const [name, id] of Object.entries(FIELDS)) $(id).value = values[name] ?? (name === "wait_minutes" ? "10" : "");
}

function currentParams() {
  const params = new URLSearchParams();
  for (const [name, id] of Object.entries(FIELDS)) {
    const value = $(id).value.trim();
    if (value !== "") params.set(name, value);
  }
  return params;
}

async function loadAgents() {
  let agents;
  try {
    agents = (await api("GET", "/api/admin/agents")).agents;
  } catch (e) {
    return;  // the filter still takes the id the URL gave; the report shows the error
  }
  const select = $("f-agent");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "Everyone"),
    ...agents.map((a) => el("option", { value: a.id }, a.name && a.name !== a.id ? `${a.name} (${a.id})` : a.id)));
  select.value = chosen;
  const departments = [...new Set(agents.flatMap((a) => a.departments || []))].sort();
  $("departments").replaceChildren(...departments.map((d) => el("option", { value: d })));
}

function clearErrors() {
  for (const [name, id] of Object.entries(FIELDS)) {
    $(`error-${name}`).textContent = "";
    $(id).removeAttribute("aria-invalid");
  }
}

function showError(e) {
  const name = e.details && e.details.parameter;
  if (e.status === 400 && name in FIELDS) {
    $(`error-${name}`).textContent = e.message;
    $(FIELDS[name]).setAttribute("aria-invalid", "true");
    $("report-status").textContent = "Not updated: correct the field marked above.";
  } else {
    $("report-status").textContent = `Not updated: ${e.message}`;
  }
}

async function update() {
  const seq = ++requestSeq;
  const params = currentParams();
  history.replaceState(null, "", `#${params}`);
  $("report-status").textContent = "Loading…";
  let report, daily;
  try {
    [report, daily] = await Promise.all([api("GET", `/api/analytics/report?${params}`),
      api("GET", `/api/analytics/daily?${params}`)]);
  } catch (e) {
    if (seq !== requestSeq) return;
    if (e.status === 401) {
      setToken(null);
      return showSignIn("Signed out: that token is no longer valid.");
    }
    clearErrors();
    showError(e instanceof ApiError ? e : new ApiError(0, { message: String(e) }));
    return;
  }
  if (seq !== requestSeq) return;
  clearErrors();
  renderReport(report, daily.daily);
}

$("filters").addEventListener("submit", (ev) => {
  ev.preventDefault();
  update();
});
$("filters").addEventListener("change", () => update());
$("reset").addEventListener("click", () => {
  setFields(defaults());
  update();
});

// ------------------------------------------------------------------ the figures

// Seconds as "45 s", "3 min 30 s", "2 h 05 min", "3 d 4 h"; no measurement as "–".
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
  const m = Math.round(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
  const h = Math.round(m / 60);
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

// Epoch seconds as "2026-11-05 14:03 UTC": the page's days are UTC days.
function utcTime(seconds) {
  return `${new Date(seconds * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function day(iso) {
  return iso.slice(0, 10);
}

// The period as asked: `to` is exclusive, so a whole-day period shows its last day.
function periodText(period) {
  const end = new Date(Date.parse(period.to) - 1);
  const whole = period.from.endsWith("T00:00:00Z") && period.to.endsWith("T00:00:00Z");
  return whole ? `${day(period.from)} to ${end.toISOString().slice(0, 10)} (UTC)`
    : `${period.from} to ${period.to}`;
}

function tile(figure, label, value, detail) {
  return el("div", { class: "tile", dataset: { figure } },
    el("dt", {}, label), el("dd", {}, el("span", { class: "value" }, value),
      detail ? el("span", { class: "detail" }, detail) : null));
}

function timeTile(figure, label, t, what) {
  return tile(figure, label, duration(t.median),
    t.count ? `median · 90%: ${duration(t.p90)} · ${t.count} ${what}` : `none measured`);
}

function renderReport(report, daily) {
  const ov = report.overview;
  const c = ov.chats;
  const filters = Object.entries(report.filters).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`);
  $("report-status").textContent = `Figures for ${periodText(report.period)}`
    + (filters.length ? `, ${filters.join(", ")}` : ", all chats") + ".";
  $("tiles").replaceChildren(
    tile("started", "Chats started", c.started),
    tile("answered", "Chats answered", c.answered, "first response in the period"),
    tile("closed", "Chats closed", c.closed),
    timeTile("first_response_time", "First response time", ov.first_response_time, "chats"),
    timeTile("response_time", "Response time", ov.response_time, "responses"),
    timeTile("resolution_time", "Resolution time", ov.resolution_time, "closes"),
    tile("escalated_unread", "Escalated (unread)", c.escalated_unread, "subscribers alerted"),
    tile("waited_longer", `Waited longer than ${report.wait_minutes} min`, c.waited_longer, "chats"),
    tile("emails_sent", "Emails sent", ov.email.emails_sent, `to ${ov.email.customers_emailed} customers`),
    tile("answers_received", "Email answers", ov.email.answers_received,
      `from ${ov.email.customers_answered} customers`),
  );
  renderDaily(daily);
  renderAgents(report.agents);
  renderRules(report.rules);
}

function table(node, caption, headers, rows) {
  node.replaceChildren(
    el("caption", { class: "visually-hidden" }, caption),
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
    el("tbody", {}, rows));
}

function renderDaily(daily) {
  const legend = $("daily-legend");
  legend.replaceChildren(...SERIES.map((s) => el("li", {}, el("span", { class: `swatch s-${s.key}` }), s.label)));
  if (!daily) {
    $("daily-chart").replaceChildren(el("p", { class: "muted" }, "The period is too long for a daily chart."));
    $("daily-table").replaceChildren();
    return;
  }
  const totals = Object.fromEntries(SERIES.map((s) => [s.key, daily.reduce((n, d) => n + d[s.key], 0)]));
  const summary = `Chats per day, ${daily.length} days from ${daily[0].day} to ${daily[daily.length - 1].day}: `
    + SERIES.map((s) => `${totals[s.key]} ${s.label.toLowerCase()}`).join(", ")
    + " in all. The numbers of each day are in the table below the chart.";
  renderBarChart($("daily-chart"), {
    categories: daily.map((d) => d.day.slice(5)),
    series: SERIES.map((s) => ({ ...s, values: daily.map((d) => d[s.key]) })),
    summary,
  });
  table($("daily-table"), "Chats per day", ["Day (UTC)", ...SERIES.map((s) => s.label)],
    daily.map((d) => el("tr", { dataset: { day: d.day } }, el("th", { scope: "row" }, d.day),
      SERIES.map((s) => el("td", { class: "num" }, d[s.key])))));
}

function renderAgents(agents) {
  const rows = agents.map((a) => el("tr", { dataset: { agent: a.agent } },
    el("th", { scope: "row" }, a.agent),
    el("td", { class: "num", dataset: { figure: "chats_handled" } }, a.chats_handled),
    el("td", { class: "num", dataset: { figure: "replies" } }, a.replies),
    el("td", { class: "num", dataset: { figure: "notes" } }, a.notes),
    el("td", { class: "num", dataset: { figure: "responses" } }, a.responses),
    el("td", { class: "num", dataset: { figure: "response_time_median" } }, duration(a.response_time_median)),
    el("td", { class: "num", dataset: { figure: "joins" } }, a.joins),
    el("td", { class: "num", dataset: { figure: "time_to_join" } }, duration(a.time_to_join.median)),
    el("td", { class: "num", dataset: { figure: "time_to_join_p90" } }, duration(a.time_to_join.p90))));
  table($("agents-table"), "Figures per agent", ["Agent", "Chats handled", "Replies", "Notes", "Responses",
    "Median response", "First joins", "Time to join (median)", "Time to join (90%)"],
  rows.length ? rows : [el("tr", {}, el("td", { colspan: 9 }, "No agents."))]);
}

function renderRules(rules) {
  const rows = rules.map((r) => el("tr", { dataset: { rule: r.rule } },
    el("th", { scope: "row" }, el("code", {}, r.rule)),
    el("td", { class: "num", dataset: { figure: "evaluated" } }, r.evaluated),
    el("td", { class: "num", dataset: { figure: "fired" } }, r.fired),
    el("td", { class: "num", dataset: { figure: "effects" } }, r.effects),
    el("td", { class: "num", dataset: { figure: "last_fired" } }, r.last_fired ? utcTime(r.last_fired) : "never")));
  table($("rules-table"), "Figures per rule", ["Rule", "Evaluated", "Fired", "Effects", "Last fired"],
    rows.length ? rows : [el("tr", {}, el("td", { colspan: 5 }, "No rules."))]);
}

start();
