// Server-Sent Events read with fetch(), so the request can carry the Authorization
// header (EventSource cannot, and a token in the URL would end up in logs). Reconnects
// after an error or the end of a response, sending Last-Event-ID, as EventSource does.

export function openStream(url, { headers = {}, lastEventId = null, onEvent, onState, onFatal } = {}) {
  let last = lastEventId;
  let retry = 2000;
  let stopped = false;
  let controller = null;

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const h = { Accept: "text/event-stream", ...headers };
        if (last !== null && last !== undefined && last !== "") h["Last-Event-ID"] = String(last);
        const res = await fetch(url, { headers: h, signal: controller.signal, cache: "no-store" });
        if (res.status === 401 || res.status === 403 || res.status === 404) {
          if (onFatal) onFatal(res.status);
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        if (onState) onState("open");
        await read(res.body);
      } catch (e) {
        if (stopped) return;
      }
      if (onState) onState("reconnecting");
      await new Promise((r) => setTimeout(r, retry));
    }
  }

  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        dispatch(block);
      }
    }
  }

  function dispatch(block) {
    let event = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
      else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (id !== null) last = id;
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch (e) {
      return;
    }
    onEvent(event, parsed, id);
  }

  run();
  return {
    close() {
      stopped = true;
      if (controller) controller.abort();
    },
    get lastEventId() { return last; },
  };
}
