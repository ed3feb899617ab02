// The Library: filters apply as soon as a select or date changes (the search on Enter: a plain form);
// each tile's star makes it a favourite, and its ⤢ shows the page's items large in the lightbox.

import { toggle } from "./favourites.js";
import { createLightbox } from "./lightbox.js";

const form = document.getElementById("library-filters");
if (form) {
  form.querySelectorAll("select, input[type=date]").forEach((field) => {
    field.addEventListener("change", () => form.requestSubmit ? form.requestSubmit() : form.submit());
  });
  // Empty filters stay out of the address bar (and out of the pagination links).
  form.addEventListener("submit", () => {
    form.querySelectorAll("select, input").forEach((field) => {
      const isDefault = (field.name === "kind" && field.value === "all") ||
        (field.name === "quality" && field.value === "any") || field.value === "";
      field.disabled = isDefault;
    });
    setTimeout(() => form.querySelectorAll("select, input").forEach((f) => { f.disabled = false; }), 0);
  });
}

// "Use as reference" in the lightbox does what the detail page's button does: a POST that opens the
// Workspace with the image as its reference.
function useAsReference(item) {
  const token = document.querySelector("input[name=csrfmiddlewaretoken]");
  const post = document.createElement("form");
  post.method = "post";
  post.action = item.referenceUrl;
  post.hidden = true;
  if (token) post.append(token.cloneNode());
  document.body.append(post);
  post.submit();
}

// A tile's ⤢ button as a lightbox item (its star says whether it is a favourite now).
function itemOf(view) {
  const tile = view.closest(".tile");
  const star = tile.querySelector("button.star");
  return {
    kind: tile.dataset.kind, id: tile.dataset.id, src: view.dataset.src, poster: view.dataset.poster,
    title: view.dataset.title, downloadUrl: view.dataset.download, detailsUrl: view.dataset.details,
    referenceUrl: view.dataset.reference, apiUrl: star.dataset.url, keep: star.getAttribute("aria-pressed") === "true",
  };
}

const gallery = document.querySelector(".gallery");
if (gallery) {
  const lightbox = createLightbox({ useAsReference });
  gallery.addEventListener("click", (event) => {
    const star = event.target.closest("button.star");
    if (star) return toggle(star);
    const view = event.target.closest("button.tile-view");
    if (!view) return undefined;
    const views = Array.from(gallery.querySelectorAll("button.tile-view"));
    return lightbox.open(views.map(itemOf), views.indexOf(view), view);
  });
}
