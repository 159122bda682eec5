// The rules page (admins): the active rule set and its versions, upload of a new version
// with each problem shown at its line and column, a dry-run of a scenario, and the
// per-chat traces of rule runs.
import { api, ApiError, el, signedIn, wireSignIn } from "./session.js";
import { renderTimeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);

const EXAMPLE_RULES = `# Rules added to the default workflow. \`chatflow check\` runs the same checks.
rule route_pricing "Chats started on the pricing page are tagged" {
  on chat.created
  when chat.page_url contains "/pricing"
  then tag "pricing"
}
`;

const EXAMPLE_SCENARIO = `start: 2026-01-05T09:00:00Z
agents:
  - {id: alice}
  - {id: bob}
tests:
  - name: nobody reads the customer
    steps:
      - {at: 0s, start_chat: {chat: c1, customer: {id: u1, name: Ann}, page_url: "https://shop.example/pricing", text: "Hi"}}
      - {at: 1m, join: {chat: c1, agent: alice}}
    expect:
      - {at: 0s, notified: {alice: [new_chat], bob: [new_chat]}}
      - {at: 10m, fired: [default.escalate_unread]}
`;

const state = { versions: [], shown: null, fileSeq: 0 };

// ------------------------------------------------------------------ sign in

async function start() {
  const me = await signedIn(showSignIn, { admin: true });
  if (!me) return;
  $("me-name").textContent = me.id;
  $("scenario").value = EXAMPLE_SCENARIO;
  await loadVersions(true);
  loadChatChoices();
  const m = location.hash.match(/^#trace=(.+)$/);
  if (m) {
    $("trace-chat").value = decodeURIComponent(m[1]);
    await showTrace();
  }
}

const showSignIn = wireSignIn(start);

// ------------------------------------------------------------------ versions

async function loadVersions(fillEditor) {
  const data = await api("GET", "/api/admin/rulesets");
  state.versions = data.rulesets;
  const active = state.versions.find((v) => v.active);
  $("active-summary").textContent = active
    ? `Version ${active.version} is active: ${active.files.length} file${active.files.length === 1 ? "" : "s"}`
      + `${active.defaults ? " plus the default rules" : ", without the default rules"}; uploaded by ${active.created_by || "?"}.`
    : "No rule set is active.";
  const list = $("versions");
  list.replaceChildren(...state.versions.slice(0, 20).map((v) => el("li", {},
    el("button", {
      type: "button", "aria-pressed": String(state.shown && state.shown.version === v.version),
      on: { click: () => showVersion(v.version) },
    }, `v${v.version}${v.active ? " (active)" : ""}`))));
  if (active) await showVersion(active.version);
  if (fillEditor) fillEditorFrom(state.shown);
}

async function showVersion(version) {
  const row = await api("GET", `/api/admin/rulesets/${version}`);
  state.shown = row;
  for (const b of $("versions").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(b.textContent.startsWith(`v${version}`)));
  }
  const files = Object.entries(row.files).sort(([a], [b]) => a.localeCompare(b));
  $("version-view").replaceChildren(
    el("p", {}, `Version ${row.version}${row.active ? " — active" : ""}. `,
      row.defaults ? "Includes the default rules." : "Without the default rules."),
    ...(files.length ? files.map(([name, text]) => el("details", { class: "file-view", open: files.length === 1 },
      el("summary", {}, name), el("pre", { class: "source", tabindex: "0", "aria-label": name }, text)))
      : [el("p", { class: "muted" }, "No files of its own: the default rules only.")]));
  $("activate").hidden = row.active;
}

$("activate").addEventListener("click", async () => {
  const v = state.shown.version;
  try {
    await api("POST", `/api/admin/rulesets/${v}/activate`);
    $("active-status").textContent = `Version ${v} is active again.`;
    await loadVersions(false);
  } catch (e) {
    $("active-status").textContent = e.message;
  }
});

$("edit-version").addEventListener("click", () => {
  fillEditorFrom(state.shown);
  $("editor-files").querySelector("textarea")?.focus();
});

// ------------------------------------------------------------------ editor

function fillEditorFrom(row) {
  const files = row ? Object.entries(row.files) : [];
  $("editor-files").replaceChildren();
  if (!files.length) addFile("custom.rules", EXAMPLE_RULES);
  for (const [name, text] of files.sort(([a], [b]) => a.localeCompare(b))) addFile(name, text);
  $("with-defaults").checked = row ? row.defaults : true;
  $("diagnostics").replaceChildren();
  $("upload-status").textContent = "";
}

function addFile(name, text) {
  const n = ++state.fileSeq;
  const nameInput = el("input", { id: `file-name-${n}`, type: "text", class: "file-name", value: name, spellcheck: "false" });
  const area = el("textarea", { id: `file-text-${n}`, class: "code file-text", rows: 14, spellcheck: "false" });
  area.value = text;
  const box = el("div", { class: "editor-file" },
    el("div", { class: "file-head" },
      el("div", {}, el("label", { for: nameInput.id }, "File name"), nameInput),
      el("button", { type: "button", class: "link danger", on: { click: () => box.remove() } }, `Remove this file`)),
    el("label", { for: area.id }, "Rules"),
    area);
  $("editor-files").append(box);
  return box;
}

$("add-file").addEventListener("click", () => {
  const box = addFile(`more-${state.fileSeq + 1}.rules`, "");
  box.querySelector("textarea").focus();
});

// Tab in a rule editor indents; Escape then Tab moves on (so the keyboard is never trapped).
let escaped = false;
$("editor-files").addEventListener("keydown", (ev) => {
  if (!ev.target.classList.contains("file-text")) return;
  if (ev.key === "Escape") { escaped = true; return; }
  if (ev.key === "Tab" && !ev.shiftKey && !escaped) {
    ev.preventDefault();
    ev.target.setRangeText("  ", ev.target.selectionStart, ev.target.selectionEnd, "end");
  }
  if (ev.key !== "Escape") escaped = false;
});

function editorFiles() {
  const files = {};
  for (const box of $("editor-files").querySelectorAll(".editor-file")) {
    const name = box.querySelector(".file-name").value.trim();
    if (name) files[name] = box.querySelector(".file-text").value;
  }
  return files;
}

function editorFor(path) {
  for (const box of $("editor-files").querySelectorAll(".editor-file")) {
    if (box.querySelector(".file-name").value.trim() === path) return box.querySelector(".file-text");
  }
  return null;
}

async function submitRules(upload) {
  const files = editorFiles();
  $("diagnostics").replaceChildren();
  if (!Object.keys(files).length) {
    $("upload-status").textContent = "Add at least one file.";
    return;
  }
  const body = { files, defaults: $("with-defaults").checked };
  $("upload-status").textContent = upload ? "Uploading…" : "Checking…";
  try {
    const out = await api("POST", upload ? "/api/admin/rulesets" : "/api/admin/rulesets/validate", body);
    const warnings = out.diagnostics.filter((d) => d.severity !== "error");
    if (upload) {
      $("upload-status").textContent = `Version ${out.version} stored and activated: ${out.rules} rules.`;
      await loadVersions(false);
    } else {
      $("upload-status").textContent = out.ok ? `No errors: ${out.rules} rules.` : "The rule set has errors:";
    }
    showDiagnostics(out.diagnostics, $("diagnostics"), (d) => editorFor(d.path));
    if (warnings.length && out.ok !== false) $("upload-status").textContent += ` ${warnings.length} warning(s).`;
  } catch (e) {
    if (e instanceof ApiError && e.details.diagnostics) {
      const errors = e.details.diagnostics.filter((d) => d.severity === "error").length;
      $("upload-status").textContent = `Not uploaded: ${errors} error${errors === 1 ? "" : "s"}. Nothing was stored.`;
      showDiagnostics(e.details.diagnostics, $("diagnostics"), (d) => editorFor(d.path));
    } else {
      $("upload-status").textContent = e.message;
    }
  }
}

$("validate").addEventListener("click", () => submitRules(false));
$("upload").addEventListener("click", () => submitRules(true));

// Each problem as `path:line:col: code message`, the source line with a caret under the
// spot, the hint, and a button that puts the cursor there.
function showDiagnostics(diagnostics, list, textareaFor) {
  list.replaceChildren(...diagnostics.map((d) => {
    const area = textareaFor(d);
    const lines = area ? area.value.split("\n") : [];
    const src = lines[d.line - 1];
    let snippet = null;
    if (src !== undefined) {
      const width = d.end_line === d.line ? Math.max(1, Math.min(d.end_column - d.column, src.length - d.column + 1)) : 1;
      snippet = el("pre", { "aria-hidden": "true" }, `${d.line} | ${src}\n${" ".repeat(String(d.line).length)} | ${" ".repeat(d.column - 1)}${"^".repeat(width)}`);
    }
    return el("li", { class: `diagnostic ${d.severity}` },
      el("strong", { class: "where" }, `${d.path}:${d.line}:${d.column}`), " ",
      el("code", {}, d.code), " ", d.message,
      snippet,
      d.hint ? el("p", { class: "hint" }, `help: ${d.hint}`) : null,
      area ? el("button", { type: "button", class: "link", on: { click: () => goTo(area, d) } },
        `Go to line ${d.line}, column ${d.column}`) : null);
  }));
}

function goTo(area, d) {
  const lines = area.value.split("\n");
  let offset = 0;
  for (let i = 0; i < d.line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  const start = offset + d.column - 1;
  let end = start + 1;
  if (d.end_line === d.line) end = offset + d.end_column - 1;
  area.focus();
  area.setSelectionRange(start, Math.max(start, Math.min(end, area.value.length)));
  const lineHeight = parseFloat(getComputedStyle(area).lineHeight) || 18;
  area.scrollTop = Math.max(0, (d.line - 3) * lineHeight);
}

// ------------------------------------------------------------------ dry-run

$("run").addEventListener("click", async () => {
  const body = { scenario: $("scenario").value };
  if (!body.scenario.trim()) return;
  if ($("scenario-test").value.trim()) body.test = $("scenario-test").value.trim();
  const against = document.querySelector('input[name="against"]:checked').value;
  if (against === "draft") {
    body.files = editorFiles();
    body.defaults = $("with-defaults").checked;
  }
  $("dryrun-status").textContent = "Running…";
  $("dryrun-problems").replaceChildren();
  $("dryrun-result").replaceChildren();
  try {
    const out = await api("POST", "/api/admin/dry-run", body);
    $("dryrun-status").replaceChildren(
      el("span", { class: `result ${out.passed ? "ok" : "error"}` },
        out.passed ? "Expectations met" : `${out.failures.length} expectation(s) not met`),
      ` — test “${out.test}” from ${out.start}`, out.tests.length > 1 ? ` (tests in the file: ${out.tests.join(", ")})` : "");
    $("dryrun-result").replaceChildren(
      ...out.notes.map((n) => el("p", { class: "muted" }, n)),
      out.failures.length ? el("ul", { class: "diagnostics", "aria-label": "Failed expectations" },
        out.failures.map((f) => el("li", { class: "diagnostic" },
          el("strong", {}, `scenario.yaml:${f.line}`), ` ${f.where}: expected ${JSON.stringify(f.expected)}, got ${JSON.stringify(f.got)}`))) : null,
      el("h3", {}, "Timeline"),
      renderTimeline(out.timeline, { relative: true }));
  } catch (e) {
    $("dryrun-status").textContent = e.message;
    if (e instanceof ApiError && e.details.diagnostics) {
      const forScenario = e.code === "scenario_invalid";
      showDiagnostics(e.details.diagnostics, $("dryrun-problems"),
        (d) => forScenario ? $("scenario") : editorFor(d.path));
    } else if (e.code === "unknown_test") {
      $("dryrun-status").textContent = `${e.message}; tests: ${e.details.tests.join(", ")}`;
    }
  }
});

// ------------------------------------------------------------------ traces

async function loadChatChoices() {
  // an admin who is also an operator sees chats; otherwise the id comes from the console
  const data = await api("GET", "/api/chats").catch(() => ({ chats: [] }));
  $("trace-chats").replaceChildren(...data.chats.slice(0, 100).map((c) =>
    el("option", { value: c.id }, `${c.customer.name || c.customer.id} — ${c.status}`)));
}

async function showTrace() {
  const id = $("trace-chat").value.trim();
  if (!id) return;
  $("trace-status").textContent = "Loading…";
  $("trace-result").replaceChildren();
  try {
    const out = await api("GET", `/api/admin/chats/${encodeURIComponent(id)}/trace`);
    $("trace-status").textContent = `${out.runs.length} rule run${out.runs.length === 1 ? "" : "s"} for chat ${out.chat_id}.`;
    $("trace-result").replaceChildren(...out.runs.map((run, i) => el("section", { class: "run", "aria-label": `Run ${i + 1}` },
      el("h3", {}, `Run ${i + 1} — ${new Date(run.at * 1000).toLocaleString()}`),
      renderTimeline(run.entries, { relative: false }))));
  } catch (e) {
    $("trace-status").textContent = e.code === "unknown_chat" ? `No chat ${id}.` : e.message;
  }
}

$("trace-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  history.replaceState(null, "", `#trace=${encodeURIComponent($("trace-chat").value.trim())}`);
  showTrace();
});

start();
