// The negative prompt a job would get, shown under the field and built by the server exactly as
// submission builds it; asked again a moment after the prompts or the job type change.

import { api } from "./api.js";
import { $, el } from "./dom.js";

const PREVIEW_DELAY_MS = 350;

// url: the negative-prompt endpoint; current(): {type, prompt, negative_prompt} as the form stands.
export function createPreview(url, current) {
  let timer = null;
  let seq = 0;

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(load, PREVIEW_DELAY_MS);
  }

  async function load() {
    clearTimeout(timer); // asked now: a scheduled ask would only repeat it
    const { type, prompt, negative_prompt: negativePrompt } = current();
    const mine = ++seq;
    const params = new URLSearchParams({ job_type: type.name, prompt, negative_prompt: negativePrompt });
    const box = $("#negative-preview");
    box.classList.add("loading");
    const { status, data: body } = await api(`${url}?${params}`);
    if (mine !== seq) return; // a newer request is on its way
    box.classList.remove("loading");
    box.dataset.jobType = type.name;
    if (status !== 200 || !body) {
      box.replaceChildren(el("span", { class: "muted", text: status === 0
        ? "Preview unavailable: the server could not be reached."
        : "Preview unavailable for this prompt; it is built again when you submit." }));
      return;
    }
    const parts = [];
    if (type.pool !== "sdxl") {
      parts.push(el("div", { class: "np-note", text: "WAN uses only your own negative prompt." }));
    }
    parts.push(el("div", { class: "np-text" + (body.negative_prompt ? "" : " muted"),
      text: body.negative_prompt || "None." }));
    if (body.multi_party && body.multi_party.length) {
      parts.push(el("div", { class: "np-note np-group",
        text: `Group terms added: the prompt shows several people (${body.multi_party.join(", ")}).` }));
    }
    if (body.dropped && body.dropped.length) {
      parts.push(el("div", { class: "np-note np-dropped",
        text: `Left out to fit the model's 77-token limit: ${body.dropped.join(", ")}.` }));
    }
    box.replaceChildren(...parts);
  }

  return { schedule, load };
}
