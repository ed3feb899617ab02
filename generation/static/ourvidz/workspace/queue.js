// My queue: the user's waiting and running jobs at a glance (each one's place or progress, its prompt as a
// way to its card), "Cancel all waiting", and "Clear finished", which takes the finished cards off the
// Workspace for good (the Library keeps their results). It shows the jobs the cards show (cards.js), so
// the stream and the polling that keep the cards live keep it live too.

import { api } from "./api.js";
import { $, el, typeLabel } from "./dom.js";
import { problem } from "./errors.js";

const FINISHED = ["completed", "failed", "cancelled"];
const RUNNING_FIRST = { processing: 0, queued: 1 };

const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

// data: the page data; cards: cards.js's createCards() (all, refresh, remove).
export function createQueue({ data, cards }) {
  const typesByName = Object.fromEntries(data.job_types.map((t) => [t.name, t]));
  const panel = $("#my-queue");
  const list = $("#my-queue-list");
  const note = $("#jobs-note");
  const cancelButton = $("#cancel-waiting");
  const clearButton = $("#clear-finished");

  // Running jobs first, then the waiting ones by their place (in their own pool's queue), then the rest.
  function order(a, b) {
    return RUNNING_FIRST[a.status] - RUNNING_FIRST[b.status]
      || (a.queue_position || Infinity) - (b.queue_position || Infinity)
      || Date.parse(a.created_at) - Date.parse(b.created_at);
  }

  function place(job) {
    if (job.status === "processing") {
      return job.total_steps ? `running · ${Math.round((100 * job.current_step) / job.total_steps)}%` : "running";
    }
    if (job.waiting_reason) return "waiting for a worker";
    return job.queue_position ? `position ${job.queue_position}` : "waiting";
  }

  function entry(job) {
    let item = list.querySelector(`li[data-job-id="${CSS.escape(String(job.id))}"]`);
    if (!item) {
      item = el("li", { dataset: { jobId: job.id } },
        el("span", { class: "badge" }),
        el("button", { type: "button", class: "link my-queue-prompt", title: "Show its card" }),
        el("span", { class: "my-queue-type small muted" }));
    }
    item.dataset.status = job.status;
    const badge = $(".badge", item);
    badge.className = `badge ${job.status}`;
    badge.textContent = place(job);
    badge.title = job.status === "queued" && job.waiting_reason ? job.waiting_reason : "";
    $(".my-queue-prompt", item).textContent = job.prompt;
    $(".my-queue-type", item).textContent = typeLabel(typesByName[job.job_type]);
    return item;
  }

  // Called on every change of the cards' jobs.
  function render() {
    const jobs = cards.all();
    const active = jobs.filter((job) => !FINISHED.includes(job.status)).sort(order);
    const waiting = active.filter((job) => job.status === "queued").length;
    const running = active.length - waiting;
    panel.hidden = active.length === 0;
    $("#my-queue-count").textContent = [waiting && `${waiting} waiting`, running && `${running} running`]
      .filter(Boolean).join(" · ");
    cancelButton.hidden = waiting === 0;
    // Only entries out of place are moved: moving the focused one would drop the keyboard focus.
    active.map(entry).forEach((item, i) => {
      if (list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
    });
    while (list.children.length > active.length) list.lastElementChild.remove();
    clearButton.hidden = !jobs.some((job) => FINISHED.includes(job.status));
  }

  function say(text, failed = false) {
    note.textContent = text;
    note.classList.toggle("error-text", failed);
  }

  // A control that just hid itself hands the keyboard focus to the nearest heading still shown.
  function refocus(control) {
    if (!control.hidden || ![control, document.body].includes(document.activeElement)) return;
    (panel.hidden ? $("#jobs-title") : $("#my-queue-title")).focus();
  }

  async function cancelWaiting() {
    const waiting = cards.all().filter((job) => job.status === "queued").length;
    const refunded = data.account.charged ? " Their credits are given back." : "";
    if (!window.confirm(`Cancel your ${count(waiting, "waiting job")}? Running jobs go on.${refunded}`)) return;
    cancelButton.disabled = true;
    const { status, data: answer } = await api(data.urls.cancel_waiting, { method: "POST" });
    cancelButton.disabled = false;
    if (status !== 200) {
      say(problem(status, answer, "cancel the waiting jobs"), true);
      return;
    }
    await Promise.all(answer.cancelled.map(cards.refresh)); // the stream tells too, but this needs no stream
    const started = answer.skipped.length;
    say(`Cancelled ${count(answer.cancelled.length, "waiting job")}.` +
      (started ? ` ${count(started, "job")} had started meanwhile and ${started === 1 ? "goes" : "go"} on.` : ""));
    refocus(cancelButton);
  }

  async function clearFinished() {
    clearButton.disabled = true;
    const { status, data: answer } = await api(data.urls.clear_finished, { method: "POST" });
    clearButton.disabled = false;
    if (status !== 200) {
      say(problem(status, answer, "clear the finished jobs"), true);
      return;
    }
    const finished = cards.all().filter((job) => FINISHED.includes(job.status));
    for (const job of finished) cards.remove(job.id);
    say(`Took ${count(finished.length, "finished job")} off the Workspace; the Library keeps their results.`);
    refocus(clearButton);
  }

  // A click on an entry's prompt brings its card into view, clear of the sticky header, with the focus.
  function onListClick(event) {
    const button = event.target.closest("button.my-queue-prompt");
    if (!button) return;
    const id = button.closest("li").dataset.jobId;
    const card = $(`#jobs .job[data-job-id="${CSS.escape(id)}"]`);
    if (!card) return;
    card.style.scrollMarginTop = `${$("header.topbar").offsetHeight + 12}px`;
    card.tabIndex = -1; // focusable while it has the focus
    card.addEventListener("blur", () => card.removeAttribute("tabindex"), { once: true });
    card.focus({ preventScroll: true });
    card.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  return { render, cancelWaiting, clearFinished, onListClick };
}
