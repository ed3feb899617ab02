// Favourites: a star on an image or video (Workspace results, Library tiles, the lightbox), a toggle
// button that sets the asset's `keep` through the API (PATCH {"keep": true|false} on its address).
// Retention never deletes what is kept; the Library's Favourites filter lists it.

import { api } from "./workspace/api.js";
import { el } from "./workspace/dom.js";
import { problem } from "./workspace/errors.js";

const known = new Map(); // asset API address -> keep, as the server last answered

// A star for the asset at `url` (its API address), pressed when it is a favourite.
export function starButton(url, keep, label = "Favourite") {
  const star = el("button", { type: "button", class: "star", title: "Favourite", "aria-label": label,
    dataset: { url } });
  show(star, favourite(url, keep));
  return star;
}

// Whether the asset at `url` is a favourite: as changed on this page, else `fallback` (what the page was given).
export function favourite(url, fallback) {
  return known.has(url) ? known.get(url) : Boolean(fallback);
}

function show(star, keep) {
  star.setAttribute("aria-pressed", String(keep));
  star.textContent = keep ? "★" : "☆";
}

// A click on a star: ask the server, then show the answer on every star of that asset on the page.
export async function toggle(star) {
  if (star.getAttribute("aria-busy") === "true") return;
  const url = star.dataset.url;
  const keep = star.getAttribute("aria-pressed") !== "true";
  star.setAttribute("aria-busy", "true");
  const { status, data } = await api(url, { method: "PATCH", json: { keep } });
  star.removeAttribute("aria-busy");
  if (status !== 200 || !data) {
    star.title = problem(status, data, keep ? "make it a favourite" : "take it off your favourites");
    return;
  }
  known.set(url, data.keep);
  for (const other of document.querySelectorAll("button.star[data-url]")) {
    if (other.dataset.url === url) {
      show(other, data.keep);
      other.title = "Favourite";
    }
  }
}
