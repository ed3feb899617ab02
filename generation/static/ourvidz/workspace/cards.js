// The job cards: one per job, newest first, showing its status, its place in its pool's queue and the
// scheduler's estimates (or why it waits), progress, remaining time and, once finished, its results or
// its error. Cards only move forward (queued → processing → finished), whatever order the answers and
// events arrive in.

import { api } from "./api.js";
import { $, el, formatSeconds, timeLabel, typeLabel } from "./dom.js";
import { problem } from "./errors.js";
import { starButton, toggle } from "../favourites.js";
import { createGallery } from "./gallery.js";
import { createLightbox } from "../lightbox.js";

const FINISHED = ["completed", "failed", "cancelled"];
// A running job's phases (JobPhase), in words; "steps" and "encoding" are worded in phaseText.
const PHASES = { loading: "Loading the model…", enhancing: "Enhancing the prompt…", decoding: "Decoding…",
  saving: "Saving…" };
const AFTER_STEPS = ["decoding", "encoding", "saving"];
const RANK = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };

// root: the cards' container; data: the page data; the buttons on cards call back:
// onReuseSeed(seed), onUseAsReference(button), onReuseSettings(job); onChange() follows every change of the
// jobs shown (My queue, queue.js, reads them with all()).
export function createCards({ root, data, onReuseSeed, onUseAsReference, onReuseSettings, onChange = () => {} }) {
  const typesByName = Object.fromEntries(data.job_types.map((t) => [t.name, t]));
  const jobs = new Map(); // id -> latest job JSON
  // id -> when that JSON arrived (ms): its estimates are seconds from then, counted down between updates.
  const received = new Map();

  const cardFor = (id) => root.querySelector(`.job[data-job-id="${CSS.escape(String(id))}"]`);
  const gallery = createGallery(data.urls);
  // The lightbox's "Use as reference" goes the way of the cards' own button.
  const lightbox = createLightbox({ useAsReference: (item, button) => {
    button.dataset.imageId = String(item.id);
    onUseAsReference(button);
  } });

  function createCard(job) {
    const type = typesByName[job.job_type];
    const card = el("div", { class: "job", dataset: { jobId: job.id, status: job.status } },
      el("div", { class: "job-head" },
        el("div", { class: "job-title" },
          el("div", { class: "job-prompt", title: job.prompt, text: job.prompt }),
          el("div", { class: "job-meta small muted" })),
        el("div", { class: "job-actions" },
          el("button", { type: "button", class: "link small reuse-settings", title: "Fill the form with this job's settings",
            text: "Reuse settings" }),
          el("button", { type: "button", class: "link small clear-job", hidden: true, text: "Clear",
            title: "Take this card off the Workspace; the Library keeps its results" }),
          el("span", { class: `badge ${job.status}`, text: job.status }))),
      el("div", { class: "job-live" },
        el("div", { class: "job-live-row" },
          el("span", { class: "queue-position" }),
          el("span", { class: "waiting-reason", role: "status", hidden: true }),
          el("span", { class: "eta small muted" })),
        el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
          el("div")),
        el("img", { class: "job-preview", alt: "Preview while it renders", hidden: true }),
        el("div", { class: "job-live-row" },
          el("span", { class: "steps small muted" }),
          el("button", { type: "button", class: "secondary small cancel-job", text: "Cancel" }))),
      el("details", { class: "enhanced-prompt small", hidden: true },
        el("summary", { text: "Enhanced prompt" }), el("p")),
      el("div", { class: "error-text", hidden: true }),
      el("div", { class: "job-note small muted", hidden: true }),
      el("div", { class: "results" }));
    card.dataset.kind = type ? type.kind : "";
    return card;
  }

  function metaLine(job) {
    const type = typesByName[job.job_type];
    const parts = [typeLabel(type)];
    if (job.num_images > 1) parts.push(`${job.num_images} images`);
    if (job.aspect_ratio) parts.push(job.aspect_ratio);
    parts.push(`seed ${job.seed}`);
    if (job.reference_type) parts.push(`${job.reference_type} reference`);
    if (job.status === "completed" && job.duration) parts.push(`done in ${formatSeconds(job.duration)}`);
    const when = timeLabel(job.created_at);
    if (when) parts.push(when);
    return parts.join(" · ");
  }

  // Show `job` (an API answer or a stream event): a new card, or an update of its card.
  // fresh: just submitted (highlighted); append: the page's initial list, already newest first.
  function upsert(job, { fresh = false, append = false } = {}) {
    if (!job || !job.id) return;
    if (job.cleared) { // taken off the Workspace, here or in another tab
      remove(job.id);
      return;
    }
    let card = cardFor(job.id);
    if (!card) {
      card = createCard(job);
      if (append) root.append(card);
      else insertInOrder(card, job);
      if (fresh) card.classList.add("fresh");
    } else {
      const known = jobs.get(String(job.id));
      // Answers can cross (a POST answer after a worker's first event): status only moves forward.
      if (known && (RANK[job.status] < RANK[known.status] || FINISHED.includes(known.status))) return;
    }
    jobs.set(String(job.id), job);
    received.set(String(job.id), Date.now());
    renderCard(card, job);
    $("#jobs-empty").hidden = true;
    onChange();
  }

  // Take a job's card off the page (a cleared job: the Library keeps its results).
  function remove(id) {
    const card = cardFor(id);
    if (card) card.remove();
    jobs.delete(String(id));
    received.delete(String(id));
    $("#jobs-empty").hidden = jobs.size > 0;
    onChange();
  }

  // A job just submitted: its card, scrolled to on narrow screens (where the form is above the list).
  function addNew(job) {
    upsert(job, { fresh: true });
    const card = cardFor(job.id);
    if (card && window.matchMedia("(max-width: 900px)").matches) {
      // Clear of the sticky header, whose height depends on how its links wrap on this screen.
      card.style.scrollMarginTop = `${$("header.topbar").offsetHeight + 12}px`;
      card.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  // Newest first, whatever order the cards arrive in (the stream also reports older running jobs).
  function insertInOrder(card, job) {
    const created = Date.parse(job.created_at) || Date.now();
    const next = Array.from(root.children).find((other) => {
      const known = jobs.get(other.dataset.jobId);
      return known && Date.parse(known.created_at) < created;
    });
    root.insertBefore(card, next || null);
  }

  function renderCard(card, job) {
    const finished = FINISHED.includes(job.status);
    card.dataset.status = job.status;
    $(".job-meta", card).textContent = metaLine(job);
    const badge = $(".badge", card);
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status;

    $(".job-live", card).hidden = finished;
    // A queued job shows why it cannot start (no worker of its pool online, or none that can serve it)
    // instead of a place in a queue that does not move.
    const reason = job.status === "queued" ? job.waiting_reason || "" : "";
    const waiting = $(".waiting-reason", card);
    waiting.textContent = reason;
    waiting.hidden = !reason;
    const position = $(".queue-position", card);
    position.textContent = job.status === "queued" && !reason
      ? (job.queue_position ? `Position ${job.queue_position} in queue` : "Waiting in queue") : "";
    position.hidden = job.status !== "queued" || Boolean(reason);

    let percent = job.total_steps ? (100 * job.current_step) / job.total_steps : 100 * (job.progress || 0);
    if (job.status === "completed") percent = 100;
    percent = Math.max(0, Math.min(100, percent));
    $(".progress > div", card).style.width = `${percent.toFixed(1)}%`;
    $(".progress", card).setAttribute("aria-valuenow", String(Math.round(percent)));
    $(".steps", card).textContent = phaseText(job, reason);
    if (job.status !== "processing") $(".job-preview", card).hidden = true;
    showEta(card, job);

    const cancel = $(".cancel-job", card);
    if (finished && cancel) cancel.remove();
    $(".clear-job", card).hidden = !finished;

    const enhanced = $(".enhanced-prompt", card);
    enhanced.hidden = !job.enhanced_prompt;
    $("p", enhanced).textContent = job.enhanced_prompt || "";

    const error = $(".error-text", card);
    error.hidden = job.status !== "failed";
    error.textContent = job.status === "failed" ? (job.error_message || "The job failed.") : "";
    const note = $(".job-note", card);
    note.hidden = job.status !== "cancelled";
    note.textContent = job.status === "cancelled" ? "Cancelled." : "";

    if (job.status === "completed") renderResults(card, job);
  }

  // What the job is doing now, in words: waiting (its place shows beside), each of the worker's phases,
  // the step it is on.
  function phaseText(job, waitingReason) {
    if (job.status === "queued") return waitingReason ? "" : "Waiting for a worker";
    if (job.status !== "processing") return "";
    if (job.phase === "steps" && job.total_steps) return `Step ${job.current_step} of ${job.total_steps}`;
    if (job.phase === "steps") return "Encoding the prompt…"; // the pipeline's work before its first step
    if (job.phase === "encoding") return job.format === "mp4" ? "Encoding the video…" : "Encoding the images…";
    return PHASES[job.phase] || "Starting…";
  }

  // The scheduler's estimates (from this installation's measured durations): when a queued job starts
  // and finishes, how long a running one has left (from its steps done, once it reports them). A job
  // without them (it waits for a worker) shows how long it takes once started. "finishing…" only once
  // the last step is done; an estimate that runs out before then says so instead.
  function showEta(card, job) {
    const eta = $(".eta", card);
    const since = (Date.now() - (received.get(String(job.id)) || Date.now())) / 1000;
    const start = job.estimated_start_seconds;
    const finish = job.estimated_finish_seconds;
    const estimated = typeof start === "number" && typeof finish === "number";
    const expected = job.expected_generation_seconds || 0;
    if (job.status === "queued" && estimated) {
      const startsIn = Math.max(0, start - since);
      // Past its estimated start a job still takes its own duration: "starts shortly", not "done in 0 s".
      const starts = startsIn >= 1 ? `starts in about ${formatSeconds(startsIn)}` : "starts shortly";
      eta.textContent = `${starts} · done in about ${formatSeconds(startsIn + finish - start)}`;
    } else if (job.status === "queued") {
      eta.textContent = expected ? `takes about ${formatSeconds(expected)}` : "";
    } else if (job.status === "processing" && AFTER_STEPS.includes(job.phase)) {
      eta.textContent = "finishing…";
    } else if (job.status === "processing" && typeof finish === "number" && finish - since > 1) {
      eta.textContent = `about ${formatSeconds(finish - since)} left`;
    } else if (job.status === "processing") {
      eta.textContent = job.phase === "steps" ? "a few seconds left" : "taking longer than usual";
    } else {
      eta.textContent = "";
    }
  }

  // A picture of a running job (an `event: preview` from the stream); none once it has finished.
  function preview({ id, image }) {
    const job = jobs.get(String(id));
    const card = cardFor(id);
    if (!job || !card || job.status !== "processing" || typeof image !== "string" || !image.startsWith("data:image/")) {
      return;
    }
    const picture = $(".job-preview", card);
    picture.src = image;
    picture.hidden = false;
  }

  // The estimates of unfinished jobs, counted down between updates (main.js calls it every second).
  function tickEtas() {
    for (const job of jobs.values()) {
      if (!FINISHED.includes(job.status)) {
        const card = cardFor(job.id);
        if (card) showEta(card, job);
      }
    }
  }

  function libraryUrl(kind, id) {
    return data.urls.library_detail.replace("KIND", kind).replace(/\/0\/$/, `/${id}/`);
  }

  function reuseButton(seed) {
    return el("button", { type: "button", class: "secondary small reuse-seed", dataset: { seed: String(seed) },
      title: `Use seed ${seed} for the next job`, "aria-label": `Reuse seed ${seed}`, text: "Reuse" });
  }

  function renderResults(card, job) {
    const results = $(".results", card);
    if (results.childElementCount) return; // already shown: leave a playing video alone
    if (job.video) {
      const video = job.video;
      results.classList.add("has-video");
      results.append(el("figure", { class: "result result-wide" },
        el("video", { class: "result-video", controls: true, preload: "metadata", playsinline: true, loop: true,
          src: video.url, poster: video.thumbnail_url || null, width: video.width, height: video.height }),
        el("figcaption", {},
          el("span", { class: "small muted",
            text: `${video.width}×${video.height} · ${video.duration ? video.duration.toFixed(1) + " s" : ""}` +
              `${video.fps ? " · " + video.fps + " fps" : ""} · seed ${job.seed}` }),
          el("span", { class: "result-actions" },
            el("a", { class: "small", href: libraryUrl("video", video.id), text: "Details" }),
            el("button", { type: "button", class: "secondary small result-open", dataset: { index: "0" },
              title: "View larger", "aria-label": "View larger", text: "⤢" }),
            starButton(gallery.apiUrl("video", video.id), video.keep),
            reuseButton(job.seed)))));
    }
    for (const [index, image] of (job.images || []).entries()) {
      const seed = image.seed === null || image.seed === undefined ? job.seed : image.seed;
      results.append(el("figure", { class: "result" },
        el("a", { class: "result-open", href: image.url, target: "_blank", rel: "noopener", title: "View larger",
          dataset: { index: String(index) } },
          el("img", { class: "result-image", src: image.thumbnail_url || image.url, alt: job.prompt,
            loading: "lazy", width: image.width, height: image.height })),
        el("button", { type: "button", class: "secondary small use-reference", dataset: { imageId: String(image.id) },
          title: "Use this image as the reference image of the next job", text: "Use as reference" }),
        starButton(gallery.apiUrl("image", image.id), image.keep),
        el("figcaption", {},
          el("a", { class: "small muted", href: libraryUrl("image", image.id), title: "Details in the Library",
            text: `seed ${seed}` }),
          reuseButton(seed))));
    }
    const files = results.childElementCount;
    if (files) {
      results.append(el("a", { class: "button secondary small download-zip", href: gallery.zipUrl(job), download: "",
        text: files > 1 ? "⬇ Download all (zip)" : "⬇ Download with parameters (zip)" }));
    }
    if (!results.childElementCount) {
      results.append(el("div", { class: "small muted", text: "Finished, but no files were recorded." }));
    }
  }

  // Ask for a job again; resolves to the answer's status.
  async function refresh(id) {
    const { status, data: job } = await api(`${data.urls.jobs}${id}/`);
    if (status === 200) upsert(job);
    else if (status === 404) { // deleted elsewhere: stop asking
      jobs.delete(String(id));
      received.delete(String(id));
    }
    return status;
  }

  const unfinishedIds = () => Array.from(jobs.values()).filter((j) => !FINISHED.includes(j.status)).map((j) => j.id);

  async function cancelJob(card, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    const id = card.dataset.jobId;
    const { status, data: job } = await api(`${data.urls.jobs}${id}/cancel/`, { method: "POST" });
    if (status === 200) {
      upsert(job);
      return;
    }
    if (status === 409) { // it finished meanwhile: show how
      await refresh(id);
      return;
    }
    button.disabled = false;
    button.textContent = "Cancel";
    const error = $(".error-text", card);
    error.hidden = false;
    error.textContent = problem(status, job, "cancel the job");
  }

  async function clearJob(card, button) {
    button.disabled = true;
    const { status, data: job } = await api(`${data.urls.jobs}${card.dataset.jobId}/clear/`, { method: "POST" });
    if (status === 200) {
      // The focus would fall out of the page with the card: it goes to the list's heading.
      const focused = card.contains(document.activeElement);
      remove(card.dataset.jobId);
      if (focused) $("#jobs-title").focus();
      return;
    }
    button.disabled = false;
    const error = $(".error-text", card);
    error.hidden = false;
    error.textContent = problem(status, job, "clear the job");
  }

  // Clicks on the cards' buttons (main.js attaches it to the container).
  function onClick(event) {
    const star = event.target.closest("button.star");
    if (star) return toggle(star);
    const open = event.target.closest(".result-open");
    if (open && !(event.ctrlKey || event.metaKey || event.shiftKey)) { // with a modifier: the browser's new tab
      event.preventDefault();
      const job = jobs.get(open.closest(".job").dataset.jobId);
      return job ? lightbox.open(gallery.items(job), Number(open.dataset.index), open) : undefined;
    }
    const reuse = event.target.closest("button.reuse-seed");
    if (reuse) return onReuseSeed(reuse.dataset.seed);
    const asReference = event.target.closest("button.use-reference");
    if (asReference) return onUseAsReference(asReference);
    const cancel = event.target.closest("button.cancel-job");
    if (cancel) return cancelJob(cancel.closest(".job"), cancel);
    const clear = event.target.closest("button.clear-job");
    if (clear) return clearJob(clear.closest(".job"), clear);
    const settings = event.target.closest("button.reuse-settings");
    if (settings) {
      const job = jobs.get(settings.closest(".job").dataset.jobId);
      if (job) onReuseSettings(job);
    }
    return undefined;
  }

  return { upsert, addNew, remove, refresh, unfinishedIds, tickEtas, onClick, preview, count: () => jobs.size,
    all: () => Array.from(jobs.values()) };
}
