// The Workspace page: the job form, the negative-prompt preview, reference uploads, and the job cards
// kept live from the job events stream (server-sent events), with polling as the fallback.
// Plain JavaScript modules, no build step. Everything goes through the JSON API with the session cookie.
// This module reads the page's data (generation/web/workspace.py), wires the events and starts.

import { createCards } from "./cards.js";
import { $ } from "./dom.js";
import { createErrors } from "./errors.js";
import { createForm } from "./form.js";
import { createLive } from "./live.js";
import { createRecentPrompts } from "./prompts.js";
import { createQueue } from "./queue.js";
import { createReferences } from "./references.js";
import { createWording } from "./wording.js";

const data = JSON.parse($("#workspace-data").textContent);
const form = $("#job-form");
const jobsEl = $("#jobs");

const errors = createErrors(form, createWording(data));
const cards = createCards({
  root: jobsEl, data,
  onReuseSeed: (seed) => controls.reuseSeed(seed),
  onUseAsReference: (button) => references.useAsReference(button),
  onReuseSettings: (job) => controls.applySettings(job),
  onChange: () => queue.render(),
});
const queue = createQueue({ data, cards });
const controls = createForm({ form, data, errors, onCreated: (job) => {
  cards.addNew(job);
  recentPrompts.add(job.prompt);
} });
const references = createReferences({ form, urls: data.urls, errors, onPicked: () => {
  controls.syncControls();
  controls.remember();
} });
const recentPrompts = createRecentPrompts({ prompts: data.recent_prompts, onChoose: controls.usePrompt });
const live = createLive(data.urls.events, cards);

form.addEventListener("submit", controls.submit);
form.addEventListener("change", controls.onChange);
form.addEventListener("input", controls.onInput);
form.elements.prompt.addEventListener("keydown", controls.onPromptKeydown);
form.elements.prompt.addEventListener("beforeinput", controls.onPromptBeforeInput);
form.elements.prompt.addEventListener("paste", controls.onPromptPaste);
$("#reset-form").addEventListener("click", controls.reset);
$("#reference-upload").addEventListener("change", references.upload);
document.addEventListener("paste", references.onPaste);
jobsEl.addEventListener("click", cards.onClick);
$("#my-queue-list").addEventListener("click", queue.onListClick);
$("#cancel-waiting").addEventListener("click", queue.cancelWaiting);
$("#clear-finished").addEventListener("click", queue.clearFinished);
window.addEventListener("pagehide", live.onPageHide);
window.addEventListener("pageshow", live.onPageShow);
setInterval(cards.tickEtas, 1000);

for (const job of data.jobs) cards.upsert(job, { append: true });
$("#jobs-empty").hidden = cards.count() > 0;
controls.start();
live.start();
