// "Recent prompts": the user's own latest prompts (the page data's, then each one submitted here) in a
// list that opens from a button beside the prompt box; choosing one fills the box. The list is an ARIA
// listbox: arrows, Home and End move, Enter or Space chooses, Escape closes (focus back on the button).

import { $, el } from "./dom.js";

const KEPT = 20;

// prompts: newest first; onChoose(text): one was chosen.
export function createRecentPrompts({ prompts, onChoose }) {
  const box = $("#recent-prompts");
  const button = $("#recent-prompts-button");
  const list = $("#recent-prompts-list");
  let items = prompts.slice(0, KEPT);
  let active = -1;

  function render() {
    box.hidden = items.length === 0;
    list.replaceChildren(...items.map((text, index) => el("li", {
      id: `recent-prompt-${index}`, role: "option", "aria-selected": "false", title: text, text,
      dataset: { index: String(index) },
    })));
  }

  function isOpen() {
    return !list.hidden;
  }

  function open() {
    if (!items.length) return;
    list.hidden = false;
    button.setAttribute("aria-expanded", "true");
    move(0);
    list.focus();
  }

  function close({ refocus = true } = {}) {
    if (!isOpen()) return;
    list.hidden = true;
    button.setAttribute("aria-expanded", "false");
    list.removeAttribute("aria-activedescendant");
    if (refocus) button.focus();
  }

  function move(index) {
    active = Math.max(0, Math.min(items.length - 1, index));
    for (const option of list.children) {
      option.setAttribute("aria-selected", String(Number(option.dataset.index) === active));
    }
    const option = list.children[active];
    list.setAttribute("aria-activedescendant", option.id);
    option.scrollIntoView({ block: "nearest" });
  }

  function choose(index) {
    const text = items[index];
    close({ refocus: false });
    if (text !== undefined) onChoose(text);
  }

  function onKeydown(event) {
    const moves = { ArrowDown: active + 1, ArrowUp: active - 1, Home: 0, End: items.length - 1,
      PageDown: active + 5, PageUp: active - 5 };
    if (event.key in moves) move(moves[event.key]);
    else if (event.key === "Enter" || event.key === " ") choose(active);
    else if (event.key === "Escape") close();
    else if (event.key === "Tab") { close({ refocus: false }); return; }
    else return;
    event.preventDefault();
    event.stopPropagation(); // Escape and Enter mean nothing more here
  }

  // A prompt just submitted comes first (once).
  function add(text) {
    if (!text) return;
    items = [text, ...items.filter((item) => item !== text)].slice(0, KEPT);
    render();
  }

  button.addEventListener("click", () => (isOpen() ? close() : open()));
  button.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" && !isOpen()) {
      event.preventDefault();
      open();
    }
  });
  list.addEventListener("keydown", onKeydown);
  list.addEventListener("click", (event) => {
    const option = event.target.closest("[role=option]");
    if (option) choose(Number(option.dataset.index));
  });
  // Clicking or tabbing anywhere else closes it.
  list.addEventListener("focusout", (event) => {
    if (!box.contains(event.relatedTarget)) close({ refocus: false });
  });
  render();

  return { add };
}
