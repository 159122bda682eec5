// Completion in a textarea (the ARIA combobox pattern): a trigger character at the start
// of a word opens a list of suggestions filtered by what follows it; arrows move, Enter or
// Tab picks, Escape closes. A trigger with `key` also opens on Shift+that key whatever the
// keyboard layout (Shift+3 is "#" on US keyboards but "£" on British ones).

export function createSuggester({ input, list, triggers }) {
  let open = null; // {char, start, items, active}
  let seq = 0;

  function atWordStart(pos) {
    return pos === 0 || /\s/.test(input.value[pos - 1]);
  }

  function allowed(char) {
    const t = triggers[char];
    return t && (!t.when || t.when());
  }

  function begin(char, start) {
    open = { char, start, items: [], active: 0 };
    refresh();
  }

  function close() {
    if (!open) return;
    open = null;
    seq++;
    list.hidden = true;
    list.replaceChildren();
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  }

  async function refresh() {
    if (!open) return;
    const caret = input.selectionStart;
    const text = input.value;
    if (caret <= open.start || text[open.start] !== open.char || text.slice(open.start, caret).includes("\n")) {
      close();
      return;
    }
    const query = text.slice(open.start + 1, caret);
    const mine = ++seq;
    const items = await triggers[open.char].source(query);
    if (!open || mine !== seq) return;
    open.items = items;
    open.active = 0;
    render();
  }

  function render() {
    const nodes = open.items.map((item, i) => {
      const li = document.createElement("li");
      li.id = `${list.id}-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === open.active));
      const label = document.createElement("span");
      label.className = "suggestion-label";
      label.textContent = item.label;
      li.append(label);
      if (item.detail) {
        const detail = document.createElement("span");
        detail.className = "suggestion-detail";
        detail.textContent = item.detail;
        li.append(detail);
      }
      li.addEventListener("mousedown", (ev) => ev.preventDefault()); // keep the focus in the textarea
      li.addEventListener("click", () => pick(i));
      return li;
    });
    if (!nodes.length) {
      const li = document.createElement("li");
      li.className = "suggestion-empty";
      li.setAttribute("aria-disabled", "true");
      li.textContent = "No matches";
      nodes.push(li);
    }
    list.replaceChildren(...nodes);
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    if (open.items.length) input.setAttribute("aria-activedescendant", `${list.id}-${open.active}`);
    else input.removeAttribute("aria-activedescendant");
  }

  function pick(i) {
    if (!open || !open.items[i]) return;
    const { start, char } = open;
    const item = open.items[i];
    const end = input.selectionStart;
    close();
    triggers[char].pick(item.value, (replacement) => {
      input.setRangeText(replacement, start, Math.max(end, start + 1), "end");
    });
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.focus();
  }

  input.addEventListener("input", (ev) => {
    if (open) {
      refresh();
      return;
    }
    if (ev.inputType === "insertText" && ev.data && ev.data.length === 1 && allowed(ev.data)) {
      const start = input.selectionStart - 1;
      if (atWordStart(start)) begin(ev.data, start);
    }
  });
  input.addEventListener("click", () => open && refresh());
  input.addEventListener("blur", () => setTimeout(() => document.activeElement !== input && close(), 150));

  return {
    close,
    get isOpen() { return !!open; },
    // keydown on the textarea: true when the suggester used the key
    handleKey(ev) {
      if (!open) {
        if (!ev.shiftKey || ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return false;
        const char = Object.keys(triggers).find((c) => triggers[c].key === ev.code);
        if (!char || !allowed(char)) return false;
        const pos = input.selectionStart;
        if (!atWordStart(pos)) return false;
        ev.preventDefault();
        input.setRangeText(char, pos, input.selectionEnd, "end");
        begin(char, pos);
        return true;
      }
      const n = open.items.length;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        if (n) {
          open.active = (open.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
          render();
        }
        return true;
      }
      if ((ev.key === "Enter" || ev.key === "Tab") && n && !ev.isComposing) {
        ev.preventDefault();
        pick(open.active);
        return true;
      }
      if (ev.key === "Escape") {
        ev.preventDefault();
        close();
        return true;
      }
      return false;
    },
  };
}
