// A rule timeline as a list: the entries of a dry-run (times relative to the scenario's
// start, field `t`) or of a chat's trace (epoch seconds, field `at`).
import { el } from "./session.js";

export function duration(seconds) {
  if (!Number.isInteger(seconds)) return `${Number(seconds.toFixed(3))}s`;
  let s = seconds;
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join("") || "0s";
}

function show(value) {
  if (value === null || value === undefined) return "none";
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}…` : value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// entries: the list; relative: true for dry-run entries (`t`, dues relative too)
export function renderTimeline(entries, { relative }) {
  const when = (e) => relative ? `+${duration(e.t)}` : new Date(e.at * 1000).toLocaleTimeString();
  const due = (d) => relative ? `+${duration(d)}` : new Date(d * 1000).toLocaleTimeString();
  const items = [];
  for (const e of entries) {
    const d = e.detail || {};
    let kind = e.kind;
    let text;
    let extra = null;
    switch (e.kind) {
      case "input":
        text = `${d.command} ${Object.entries(d.args || {}).map(([k, v]) => `${k === "chat_id" ? "chat" : k}=${show(v)}`).join(" ")}`;
        break;
      case "refused":
        text = `${d.command}: ${d.code} ${d.message || ""}`;
        break;
      case "event":
        text = `${e.event}${e.chat_id ? ` ${e.chat_id}` : ""} actor=${d.actor}${d.agent ? ` by ${d.agent}` : ""}${d.rule ? ` (rule ${d.rule})` : ""}`;
        break;
      case "rule": {
        kind = e.fired ? "✓ fired" : "· not fired";
        const again = d.state_rule && !e.fired && d.was_true && d.why && d.why[0] && d.why[0].value
          ? " (already true before: fires once per episode)" : "";
        text = `${e.rule} [${d.state_rule ? "state" : "event"} rule]${again}`;
        if (d.why && d.why.length) {
          extra = el("ul", { class: "why", "aria-label": `Conditions of ${e.rule}` },
            d.why.map((w) => el("li", {}, `${"\u00a0\u00a0".repeat(w.depth)}${w.condition} = ${show(w.value)}`)));
        }
        break;
      }
      case "fired":
        continue; // the rule entry above says it
      case "timer_armed":
        text = `armed ${e.rule}, due ${due(d.due)}`;
        kind = "timer";
        break;
      case "timer_cancelled":
        text = `cancelled ${e.rule} (was due ${due(d.due)})`;
        kind = "timer";
        break;
      case "timer_fired":
        text = `due: ${e.rule}; the chat's state rules are evaluated`;
        kind = "timer";
        break;
      case "effect":
        text = `${d.kind}${d.to ? ` ${d.to}` : ""}${d.template ? ` [${d.template}]` : ""}${d.text ? ` ${show(d.text)}` : ""} ← ${e.rule}`;
        break;
      case "skipped":
        text = `${d.action} of ${e.rule}: ${d.reason}`;
        break;
      case "stop":
        text = `${e.rule} ends the evaluation of ${e.event}`;
        break;
      case "cascade_limit":
        text = `${e.event} not evaluated: chain deeper than 10 events`;
        break;
      default:
        text = JSON.stringify(e);
    }
    items.push(el("li", { class: `k-${e.kind}${e.fired ? " fired" : ""}` },
      el("span", { class: "when" }, when(e)),
      el("span", { class: "kind" }, kind),
      el("div", { class: "what" }, el("span", {}, text), extra)));
  }
  return el("ol", { class: "timeline" }, items);
}
