// The lightbox: one image or video of a set (a Workspace card's batch, a Library page's items) shown large
// in a modal <dialog>. Left and Right step through the set, Escape (or Close, or a click beside it) closes
// it and the focus goes back to what opened it. Under it: favourite, download and, for an image,
// "Use as reference" (the page says how), and a link to its Library page.

import { favourite, starButton, toggle } from "./favourites.js";
import { el } from "./workspace/dom.js";

// An item: {kind: "image"|"video", id, src, poster, title, downloadUrl, detailsUrl, apiUrl, keep}.
// useAsReference(item, button): what "Use as reference" does for an image (no such button without it).
export function createLightbox({ useAsReference = null } = {}) {
  const title = el("p", { class: "lightbox-title", id: "lightbox-title" });
  const count = el("span", { class: "lightbox-count small muted" });
  const close = el("button", { type: "button", class: "secondary lightbox-close", title: "Close (Esc)",
    "aria-label": "Close", text: "✕" });
  const previous = el("button", { type: "button", class: "secondary lightbox-step lightbox-previous",
    title: "Previous (←)", "aria-label": "Previous", text: "‹" });
  const next = el("button", { type: "button", class: "secondary lightbox-step lightbox-next",
    title: "Next (→)", "aria-label": "Next", text: "›" });
  const media = el("div", { class: "lightbox-media" });
  const star = el("span", { class: "lightbox-star" });
  const download = el("a", { class: "button secondary small lightbox-download", download: "", text: "⬇ Download" });
  const reference = el("button", { type: "button", class: "secondary small lightbox-reference",
    title: "Use this image as the reference image of the next job", text: "◧ Use as reference" });
  const details = el("a", { class: "small lightbox-details", text: "Details" });
  const dialog = el("dialog", { class: "lightbox", "aria-labelledby": "lightbox-title" },
    el("div", { class: "lightbox-bar" }, title, count, close),
    el("div", { class: "lightbox-stage" }, previous, media, next),
    el("div", { class: "lightbox-actions" }, star, download, reference, details));
  document.body.append(dialog);

  let items = [];
  let index = 0;
  let opener = null;

  function show(at) {
    index = (at + items.length) % items.length; // past either end: round to the other
    const item = items[index];
    dialog.dataset.index = String(index);
    dialog.dataset.kind = item.kind;
    media.replaceChildren(item.kind === "video"
      ? el("video", { src: item.src, poster: item.poster || null, controls: true, playsinline: true, loop: true,
        preload: "metadata" })
      : el("img", { src: item.src, alt: item.title || "" }));
    title.textContent = item.title || "";
    count.textContent = items.length > 1 ? `${index + 1} of ${items.length}` : "";
    previous.hidden = next.hidden = items.length < 2;
    download.href = item.downloadUrl;
    reference.hidden = !useAsReference || item.kind !== "image";
    details.hidden = !item.detailsUrl;
    if (item.detailsUrl) details.href = item.detailsUrl;
    star.replaceChildren(item.apiUrl ? starButton(item.apiUrl, favourite(item.apiUrl, item.keep)) : "");
  }

  // Show items[at]; `from` gets the focus back when the lightbox closes.
  function open(list, at, from) {
    if (!list.length) return;
    items = list;
    opener = from || document.activeElement;
    show(at);
    if (!dialog.open) dialog.showModal();
    close.focus();
  }

  previous.addEventListener("click", () => show(index - 1));
  next.addEventListener("click", () => show(index + 1));
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // the backdrop, beside the lightbox's box
    const pressed = event.target.closest("button.star");
    if (pressed) toggle(pressed);
  });
  reference.addEventListener("click", () => {
    const item = items[index];
    dialog.close();
    useAsReference(item, reference);
  });
  dialog.addEventListener("keydown", (event) => {
    // A focused video's own controls take the arrows (seeking); so does a key with a modifier.
    if (event.target instanceof HTMLVideoElement || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      event.preventDefault();
      if (items.length > 1) show(index + (event.key === "ArrowRight" ? 1 : -1));
    }
  });
  dialog.addEventListener("close", () => {
    media.replaceChildren(); // stops a playing video
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });

  return { open, element: dialog };
}
