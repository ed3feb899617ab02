// The Workspace page: the job form, the negative-prompt preview, reference uploads, and the job cards
// kept live from the job events stream (server-sent events), with polling as the fallback.
// Plain JavaScript, no build step. Everything goes through the JSON API with the session cookie.
(() => {
  "use strict";

  const data = JSON.parse(document.getElementById("workspace-data").textContent);
  const form = document.getElementById("job-form");
  const jobsEl = document.getElementById("jobs");
  const typesByName = Object.fromEntries(data.job_types.map((t) => [t.name, t]));
  const FINISHED = ["completed", "failed", "cancelled"];
  const RANK = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };
  const POLL_MS = 2000;
  const STREAM_RETRY_MS = 30000;
  const PREVIEW_DELAY_MS = 350;
  const jobs = new Map(); // id -> latest job JSON

  // ---------------------------------------------------------------- helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : form.elements.csrfmiddlewaretoken.value;
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // fetch() with the session cookie and, for anything but GET, the CSRF header.
  // Resolves to {status, data}; status 0 when the server could not be reached.
  async function api(url, { method = "GET", json, body, headers = {} } = {}) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
    if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
    if (json !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(json);
    } else if (body !== undefined) {
      options.body = body;
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      return { status: 0, data: null };
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    return { status: response.status, data: payload };
  }

  function formatSeconds(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.floor(seconds / 60);
    const rest = seconds % 60;
    return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
  }

  function megabytes(bytes) {
    return `${(Number(bytes) / 1048576).toFixed(1)} MB`;
  }

  function typeLabel(type) {
    if (!type) return "";
    const model = type.pool === "sdxl" ? "SDXL" : "WAN";
    return `${model} ${type.kind} · ${type.quality}${type.enhanced ? " · enhanced" : ""}`;
  }

  function timeLabel(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const sameDay = date.toDateString() === new Date().toDateString();
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return sameDay ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })}, ${time}`;
  }

  // ---------------------------------------------------------------- form state

  const field = (name) => form.elements[name];
  const radioValue = (name) => {
    const checked = form.querySelector(`input[name="${name}"]:checked`);
    return checked ? checked.value : "";
  };
  const setRadio = (name, value) => {
    const radio = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (radio) radio.checked = true;
  };

  function currentType() {
    const kind = radioValue("kind") || "image";
    const model = kind === "video" ? "wan" : radioValue("model") || "sdxl";
    const enhanced = model === "wan" && field("enhanced").checked;
    const key = `${kind}:${model}:${radioValue("quality") || "fast"}:${enhanced ? 1 : 0}`;
    return typesByName[data.type_keys[key]];
  }

  function numImages(type) {
    const n = parseInt(radioValue("num_images"), 10) || 1;
    return type.num_images.includes(n) ? n : 1;
  }

  // Bring dependent controls in line with the choices: video is WAN only, "enhance" is WAN only,
  // several images are SDXL only, references only where the pool takes them.
  function syncControls() {
    const kind = radioValue("kind");
    const sdxlRadio = $("#model-sdxl");
    sdxlRadio.disabled = kind === "video";
    if (kind === "video") setRadio("model", "wan");
    const enhanced = field("enhanced");
    enhanced.disabled = radioValue("model") === "sdxl";
    if (enhanced.disabled) enhanced.checked = false;
    enhanced.closest(".switch").classList.toggle("disabled", enhanced.disabled);

    const type = currentType();
    for (const radio of $$('input[name="num_images"]')) {
      radio.disabled = !type.num_images.includes(parseInt(radio.value, 10));
      if (radio.disabled && radio.checked) setRadio("num_images", "1");
    }
    $("#num-images-hint").textContent = type.num_images.length > 1 ? "" : `WAN makes one ${type.kind} per job.`;
    for (const option of field("aspect_ratio").options) {
      option.disabled = !(option.value in type.aspect_ratios);
      const size = type.aspect_ratios[option.value];
      option.title = size ? `${size[0]}×${size[1]}` : "";
    }
    syncSeed();
    syncReference(type);
    showExpected(type);
  }

  function showExpected(type) {
    const n = numImages(type);
    const total = type.expected_seconds * (type.pool === "sdxl" ? n : 1);
    const details = [typeLabel(type)];
    if (type.pool === "sdxl" && n > 1) details.push(`${formatSeconds(type.expected_seconds)} per image × ${n}`);
    details.push(`${type.credits} credit${type.credits === 1 ? "" : "s"}`);
    const box = $("#expected-time");
    box.replaceChildren(
      el("span", { class: "clock", "aria-hidden": "true", text: "◷" }),
      el("span", { class: "expected-main", text: `About ${formatSeconds(total)}` }),
      el("span", { class: "expected-details muted small", text: details.join(" · ") }),
    );
    box.dataset.jobType = type.name;
    box.dataset.seconds = String(total);
    $("#submit-job").textContent = type.kind === "video" ? "Generate video"
      : n > 1 ? `Generate ${n} images` : "Generate image";
  }

  function syncSeed() {
    const fixed = radioValue("seed_mode") === "fixed";
    field("seed").classList.toggle("inactive", !fixed);
    field("seed").placeholder = fixed ? "Enter a seed" : "A new one each time";
  }

  const REFERENCE_HINTS = {
    style: "Strength: how strongly the reference's look is applied.",
    composition: "Strength: how closely the result keeps the reference's layout.",
    character: "Strength: how closely the result keeps the reference's subject.",
  };

  function syncReference(type) {
    const supported = type.reference_types;
    const section = $("#reference-section");
    section.disabled = supported.length === 0;
    let hint = "";
    if (!supported.length) {
      hint = type.pool === "wan" && type.kind === "image"
        ? "WAN images can't start from a reference image. Choose SDXL, or make a video."
        : `This server can't use reference images for ${typeLabel(type)}.`;
    }
    $("#reference-hint").textContent = hint;
    const typeSelect = field("reference_type");
    for (const option of typeSelect.options) {
      option.disabled = !supported.includes(option.value);
      option.textContent = option.textContent.replace(/ \(not available\)$/, "") +
        (option.disabled && supported.length ? " (not available)" : "");
    }
    if (supported.length && !supported.includes(typeSelect.value)) {
      typeSelect.value = supported.includes("composition") ? "composition" : supported[0];
    }
    const hasImage = field("reference_image").value !== "";
    section.classList.toggle("no-image", !hasImage);
    $("#strength-hint").textContent = !supported.length || !hasImage ? ""
      : type.kind === "video" ? "The video starts from this image; strength has no effect on videos."
        : REFERENCE_HINTS[typeSelect.value] || "";
    showReferencePreview();
  }

  function showReferencePreview() {
    const option = field("reference_image").selectedOptions[0];
    const img = $("#reference-preview");
    const url = option && option.dataset.url;
    img.hidden = !url;
    if (url && img.getAttribute("src") !== url) img.src = url;
    if (!url) img.removeAttribute("src");
    $("#reference-thumb").classList.toggle("has-image", Boolean(url));
  }

  function showStrength() {
    $("#strength-value").textContent = parseFloat(field("reference_strength").value).toFixed(1);
  }

  function showCounter() {
    const prompt = field("prompt");
    $("#prompt-counter").textContent = `${prompt.value.length} / ${prompt.maxLength}`;
  }

  // Fill the form from a job's settings (the "Reuse settings" button on a card).
  function applySettings(job) {
    const type = typesByName[job.job_type];
    if (!type) return;
    setRadio("kind", type.kind);
    setRadio("model", type.pool);
    setRadio("quality", type.quality);
    field("enhanced").checked = type.enhanced;
    field("prompt").value = job.prompt;
    field("negative_prompt").value = (job.metadata && job.metadata.user_negative_prompt) || "";
    setRadio("num_images", String(job.num_images || 1));
    if (job.aspect_ratio) field("aspect_ratio").value = job.aspect_ratio;
    setRadio("seed_mode", "fixed");
    field("seed").value = job.seed;
    if (job.reference_image && field("reference_image").querySelector(`option[value="${job.reference_image}"]`)) {
      field("reference_image").value = String(job.reference_image);
      field("reference_type").value = job.reference_type;
      if (job.reference_strength) field("reference_strength").value = job.reference_strength;
    } else {
      field("reference_image").value = "";
    }
    showStrength();
    showCounter();
    syncControls();
    schedulePreview();
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    field("prompt").focus({ preventScroll: true });
  }

  function reuseSeed(seed) {
    setRadio("seed_mode", "fixed");
    const input = field("seed");
    input.value = seed;
    syncSeed();
    clearFieldError("seed");
    input.scrollIntoView({ behavior: "smooth", block: "center" });
    input.focus({ preventScroll: true });
    input.classList.remove("flash");
    void input.offsetWidth; // restart the animation
    input.classList.add("flash");
  }

  // ---------------------------------------------------------------- negative prompt preview

  let previewTimer = null;
  let previewSeq = 0;

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(loadPreview, PREVIEW_DELAY_MS);
  }

  async function loadPreview() {
    const type = currentType();
    const seq = ++previewSeq;
    const params = new URLSearchParams({
      job_type: type.name, prompt: field("prompt").value, negative_prompt: field("negative_prompt").value,
    });
    const box = $("#negative-preview");
    box.classList.add("loading");
    const { status, data: body } = await api(`${data.urls.negative_prompt}?${params}`);
    if (seq !== previewSeq) return; // a newer request is on its way
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

  // ---------------------------------------------------------------- errors

  const FIELD_NAMES = {
    prompt: "Prompt", negative_prompt: "Negative prompt", num_images: "Quantity", seed: "Seed",
    aspect_ratio: "Aspect ratio", reference_image: "Reference image", reference_type: "Reference use",
    reference_strength: "Strength", job_type: "Job type", file: "Upload",
  };
  const TYPE_NAMES = Object.keys(typesByName).sort((a, b) => b.length - a.length);

  // DRF's stock messages, reworded for people; the API's own messages get its identifiers replaced.
  function friendly(message, name) {
    const rules = [
      [/^This field may not be blank\.$/, () => (name === "prompt"
        ? "Describe what you want to generate." : "This can't be empty.")],
      [/^This field is required\.$/, () => "This is required."],
      [/^This field may not be null\.$/, () => "This is required."],
      [/^A valid (integer|number) is required\.$/, () => "Enter a whole number."],
      [/^Ensure this value is less than or equal to (\S+)\.$/, (m) => `Must be ${m[1]} or less.`],
      [/^Ensure this value is greater than or equal to (\S+)\.$/, (m) => `Must be ${m[1]} or more.`],
      [/^Ensure this field has no more than (\d+) characters\.$/, (m) => `Too long: ${m[1]} characters at most.`],
      [/^Invalid pk .* object does not exist\.$/, () => "That reference image is no longer available; pick another or upload it again."],
      [/^"(.*)" is not a valid choice\.$/, (m) => `“${m[1]}” is not one of the choices.`],
      [/^The submitted data was not a file/, () => "Choose an image file to upload."],
      [/^Not a readable image/, () => "That file is not an image we can read. Upload a PNG, JPEG or WebP picture."],
      [/^The file is (\d+) bytes; the limit is (\d+)\.$/,
        (m) => `That file is too large (${megabytes(m[1])}); the limit is ${megabytes(m[2])}.`],
    ];
    for (const [pattern, reword] of rules) {
      const match = String(message).match(pattern);
      if (match) return reword(match);
    }
    let text = String(message)
      .replace(/\breference_image\b/g, "reference image")
      .replace(/\breference_type\b/g, "reference use")
      .replace(/\bnum_images\b/g, "quantity");
    for (const typeName of TYPE_NAMES) {
      text = text.replace(new RegExp(`\\b${typeName}\\b`, "g"), typeLabel(typesByName[typeName]));
    }
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function flatten(messages) {
    if (Array.isArray(messages)) return messages.flatMap(flatten);
    if (messages && typeof messages === "object") return Object.values(messages).flatMap(flatten);
    return [String(messages)];
  }

  function clearFieldError(name) {
    const slot = $(`.field-error[data-field="${name}"]`, form);
    if (slot) slot.textContent = "";
    for (const control of $$(`[name="${name}"]`, form)) control.removeAttribute("aria-invalid");
  }

  function clearErrors() {
    for (const slot of $$(".field-error", form)) slot.textContent = "";
    for (const control of $$("[aria-invalid]", form)) control.removeAttribute("aria-invalid");
    const top = $("#form-errors");
    top.replaceChildren();
    top.hidden = true;
  }

  function showFormError(text) {
    const top = $("#form-errors");
    top.append(el("div", { text }));
    top.hidden = false;
  }

  // Put each error of a 400 answer next to its field; the rest at the top of the form.
  function showErrors(errors) {
    let first = null;
    for (const [name, messages] of Object.entries(errors || {})) {
      const texts = flatten(messages).map((m) => friendly(m, name));
      const slot = $(`.field-error[data-field="${name}"]`, form);
      if (slot && name !== "non_field_errors") {
        slot.textContent = texts.join(" ");
        const controls = $$(`[name="${name}"]`, form);
        controls.forEach((c) => c.setAttribute("aria-invalid", "true"));
        first = first || controls.find((c) => !c.disabled) || slot;
      } else {
        const label = FIELD_NAMES[name] && name !== "non_field_errors" ? `${FIELD_NAMES[name]}: ` : "";
        texts.forEach((t) => showFormError(label + t));
        first = first || $("#form-errors");
      }
    }
    if (first) {
      first.scrollIntoView({ behavior: "smooth", block: "center" });
      if (first.focus && first.matches("input, select, textarea")) first.focus({ preventScroll: true });
    }
  }

  function problem(status, body, action) {
    if (status === 0) return `Could not reach the server to ${action}. Check your connection and try again.`;
    if (status === 401 || status === 403) {
      return body && /CSRF/i.test(body.detail || "")
        ? "Your session changed in another tab. Reload the page and try again."
        : "You have been logged out. Reload the page and log in again.";
    }
    if (status === 429) return "Too many requests at once; wait a moment and try again.";
    if (body && body.detail) return friendly(body.detail);
    return `Something went wrong on the server (error ${status}) while trying to ${action}. Please try again.`;
  }

  // ---------------------------------------------------------------- submit

  function payload() {
    const type = currentType();
    const body = {
      job_type: type.name,
      prompt: field("prompt").value,
      negative_prompt: field("negative_prompt").value,
      num_images: numImages(type),
      aspect_ratio: field("aspect_ratio").value,
    };
    if (radioValue("seed_mode") === "fixed") {
      const seed = field("seed").value.trim();
      body.seed = /^\d+$/.test(seed) ? Number(seed) : seed;
    }
    if (!$("#reference-section").disabled && field("reference_image").value) {
      body.reference_image = Number(field("reference_image").value);
      body.reference_type = field("reference_type").value;
      body.reference_strength = parseFloat(field("reference_strength").value);
    }
    return body;
  }

  let submitting = false;

  async function submit(event) {
    event.preventDefault();
    if (submitting) return;
    clearErrors();
    const body = payload();
    if (radioValue("seed_mode") === "fixed" && body.seed === "") {
      showErrors({ seed: ["Enter a seed, or choose Random."] });
      return;
    }
    submitting = true;
    const button = $("#submit-job");
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Submitting…";
    const { status, data: job } = await api(data.urls.jobs, {
      method: "POST", json: body, headers: { "Idempotency-Key": newKey() },
    });
    submitting = false;
    button.disabled = false;
    button.textContent = label;
    if (status === 201 || status === 200) {
      upsertJob(job, { fresh: true });
      const card = cardFor(job.id);
      if (card && window.matchMedia("(max-width: 900px)").matches) {
        card.scrollIntoView({ behavior: "smooth", block: "start" });
      }
    } else if (status === 400) {
      showErrors(job);
    } else {
      showFormError(problem(status, job, "submit the job"));
    }
  }

  // ---------------------------------------------------------------- job cards

  const cardFor = (id) => jobsEl.querySelector(`.job[data-job-id="${CSS.escape(String(id))}"]`);

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
          el("span", { class: `badge ${job.status}`, text: job.status }))),
      el("div", { class: "job-live" },
        el("div", { class: "job-live-row" },
          el("span", { class: "queue-position" }),
          el("span", { class: "eta small muted" })),
        el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
          el("div")),
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

  function upsertJob(job, { fresh = false, append = false } = {}) {
    if (!job || !job.id) return;
    let card = cardFor(job.id);
    if (!card) {
      card = createCard(job);
      if (append) jobsEl.append(card);
      else insertInOrder(card, job);
      if (fresh) card.classList.add("fresh");
    } else {
      const known = jobs.get(String(job.id));
      // Answers can cross (a POST answer after a worker's first event): status only moves forward.
      if (known && (RANK[job.status] < RANK[known.status] || FINISHED.includes(known.status))) return;
    }
    jobs.set(String(job.id), job);
    renderCard(card, job);
    $("#jobs-empty").hidden = true;
  }

  // Newest first, whatever order the cards arrive in (the stream also reports older running jobs).
  function insertInOrder(card, job) {
    const created = Date.parse(job.created_at) || Date.now();
    const next = Array.from(jobsEl.children).find((other) => {
      const known = jobs.get(other.dataset.jobId);
      return known && Date.parse(known.created_at) < created;
    });
    jobsEl.insertBefore(card, next || null);
  }

  function renderCard(card, job) {
    const finished = FINISHED.includes(job.status);
    card.dataset.status = job.status;
    $(".job-meta", card).textContent = metaLine(job);
    const badge = $(".badge", card);
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status;

    $(".job-live", card).hidden = finished;
    const position = $(".queue-position", card);
    position.textContent = job.status === "queued"
      ? (job.queue_position ? `Position ${job.queue_position} in queue` : "Waiting in queue") : "";
    position.hidden = job.status !== "queued";

    let percent = job.total_steps ? (100 * job.current_step) / job.total_steps : 100 * (job.progress || 0);
    if (job.status === "completed") percent = 100;
    percent = Math.max(0, Math.min(100, percent));
    $(".progress > div", card).style.width = `${percent.toFixed(1)}%`;
    $(".progress", card).setAttribute("aria-valuenow", String(Math.round(percent)));
    const steps = $(".steps", card);
    if (job.total_steps && job.status !== "queued") {
      steps.textContent = `step ${job.current_step} / ${job.total_steps}`;
    } else if (job.status === "processing") {
      steps.textContent = typesByName[job.job_type] && typesByName[job.job_type].enhanced
        ? "Enhancing the prompt…" : "Starting…";
    } else {
      steps.textContent = "";
    }
    showEta(card, job);

    const cancel = $(".cancel-job", card);
    if (finished && cancel) cancel.remove();

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

  function showEta(card, job) {
    const eta = $(".eta", card);
    const expected = job.expected_generation_seconds || 0;
    if (job.status === "queued") {
      eta.textContent = expected ? `takes about ${formatSeconds(expected)}` : "";
    } else if (job.status === "processing" && job.started_at) {
      const elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
      const left = expected - Math.max(0, elapsed);
      eta.textContent = left > 1 ? `about ${formatSeconds(left)} left` : "finishing…";
    } else {
      eta.textContent = "";
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
            reuseButton(job.seed)))));
    }
    for (const image of job.images || []) {
      const seed = image.seed === null || image.seed === undefined ? job.seed : image.seed;
      results.append(el("figure", { class: "result" },
        el("a", { href: image.url, target: "_blank", rel: "noopener", title: "Open full size" },
          el("img", { class: "result-image", src: image.thumbnail_url || image.url, alt: job.prompt,
            loading: "lazy", width: image.width, height: image.height })),
        el("button", { type: "button", class: "secondary small use-reference", dataset: { imageId: String(image.id) },
          title: "Use this image as the reference image of the next job", text: "Use as reference" }),
        el("figcaption", {},
          el("a", { class: "small muted", href: libraryUrl("image", image.id), title: "Details in the Library",
            text: `seed ${seed}` }),
          reuseButton(seed))));
    }
    if (!results.childElementCount) {
      results.append(el("div", { class: "small muted", text: "Finished, but no files were recorded." }));
    }
  }

  async function cancelJob(card, button) {
    button.disabled = true;
    button.textContent = "Cancelling…";
    const id = card.dataset.jobId;
    const { status, data: job } = await api(`${data.urls.jobs}${id}/cancel/`, { method: "POST" });
    if (status === 200) {
      upsertJob(job);
      return;
    }
    if (status === 409) { // it finished meanwhile: show how
      await refreshJob(id);
      return;
    }
    button.disabled = false;
    button.textContent = "Cancel";
    const error = $(".error-text", card);
    error.hidden = false;
    error.textContent = problem(status, job, "cancel the job");
  }

  jobsEl.addEventListener("click", (event) => {
    const reuse = event.target.closest("button.reuse-seed");
    if (reuse) return reuseSeed(reuse.dataset.seed);
    const asReference = event.target.closest("button.use-reference");
    if (asReference) return useAsReference(asReference);
    const cancel = event.target.closest("button.cancel-job");
    if (cancel) return cancelJob(cancel.closest(".job"), cancel);
    const settings = event.target.closest("button.reuse-settings");
    if (settings) {
      const job = jobs.get(settings.closest(".job").dataset.jobId);
      if (job) applySettings(job);
    }
    return undefined;
  });

  // ---------------------------------------------------------------- live updates

  const unfinishedIds = () => Array.from(jobs.values()).filter((j) => !FINISHED.includes(j.status)).map((j) => j.id);

  async function refreshJob(id) {
    const { status, data: job } = await api(`${data.urls.jobs}${id}/`);
    if (status === 200) upsertJob(job);
    else if (status === 404) jobs.delete(String(id)); // deleted elsewhere: stop asking
    return status;
  }

  // Catch up on anything missed while the stream was not connected.
  async function resync() {
    await Promise.all(unfinishedIds().map(refreshJob));
  }

  function setLive(state, text) {
    const badge = $("#live-status");
    badge.dataset.state = state;
    badge.textContent = text;
    badge.title = {
      live: "Updates arrive as they happen.",
      polling: "The live connection is unavailable; checking for updates every 2 seconds.",
      connecting: "Connecting to live updates…",
      offline: "Updates are paused.",
    }[state] || "";
  }

  let source = null;
  let streamFailures = 0;
  let pollTimer = null;
  let streamRetry = null;
  let polling = false;

  function startStream() {
    clearTimeout(streamRetry);
    streamRetry = null;
    if (!("EventSource" in window)) {
      startPolling();
      return;
    }
    streamFailures = 0;
    source = new EventSource(data.urls.events);
    source.addEventListener("open", () => {
      streamFailures = 0;
      stopPolling();
      setLive("live", "Live");
      resync();
    });
    source.addEventListener("job", (event) => {
      let job = null;
      try {
        job = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      upsertJob(job);
    });
    source.addEventListener("error", () => {
      // The server ends each stream after a while and the browser reconnects: one error is normal.
      streamFailures += 1;
      if (source.readyState === EventSource.CLOSED || streamFailures >= 3) {
        source.close();
        source = null;
        startPolling();
        streamRetry = setTimeout(startStream, STREAM_RETRY_MS);
      } else if (streamFailures >= 2) {
        setLive("connecting", "Reconnecting…");
      }
    });
  }

  function startPolling() {
    setLive("polling", "Polling");
    if (!pollTimer) pollTimer = setInterval(poll, POLL_MS);
    poll();
  }

  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const statuses = await Promise.all(unfinishedIds().map(refreshJob));
      if (statuses.some((s) => s === 401 || s === 403)) {
        stopPolling();
        clearTimeout(streamRetry);
        setLive("offline", "Logged out — reload");
      }
    } finally {
      polling = false;
    }
  }

  // Remaining time of running jobs, between updates.
  setInterval(() => {
    for (const job of jobs.values()) {
      if (job.status === "processing") {
        const card = cardFor(job.id);
        if (card) showEta(card, job);
      }
    }
  }, 1000);

  // ---------------------------------------------------------------- reference uploads

  // Select `ref` in the picker, listing it first (an upload of the same bytes gives the same one).
  function addReference(ref) {
    const select = field("reference_image");
    const name = ref.original_name || "Uploaded image";
    const option = select.querySelector(`option[value="${CSS.escape(String(ref.id))}"]`) || el("option", {
      value: String(ref.id), dataset: { url: ref.url }, text: `${name} · ${ref.width}×${ref.height}` });
    select.insertBefore(option, select.options[1] || null);
    select.value = String(ref.id);
    clearFieldError("reference_image");
    syncControls();
  }

  function flashStatus(text) {
    const status = $("#upload-status");
    status.textContent = text;
    setTimeout(() => { if (status.textContent === text) status.textContent = ""; }, 3000);
  }

  // A result of an earlier job becomes the reference image of the next one.
  async function useAsReference(button) {
    button.disabled = true;
    const answer = await api(`${data.urls.images}${button.dataset.imageId}/reference/`, { method: "POST" });
    button.disabled = false;
    if (answer.status === 201) {
      addReference(answer.data);
      $("#reference-section").scrollIntoView({ behavior: "smooth", block: "center" });
      flashStatus("Reference set.");
    } else {
      const messages = answer.status === 400 && answer.data ? flatten(answer.data).map((m) => friendly(m))
        : [problem(answer.status, answer.data, "use the image as a reference")];
      $('.field-error[data-field="reference_image"]').textContent = messages.join(" ");
    }
  }

  async function upload() {
    const input = $("#reference-upload");
    const file = input.files[0];
    if (!file) return;
    clearFieldError("file");
    clearFieldError("reference_image");
    const status = $("#upload-status");
    status.textContent = `Uploading ${file.name}…`;
    const body = new FormData();
    body.append("file", file);
    const answer = await api(data.urls.references, { method: "POST", body });
    input.value = "";
    status.textContent = "";
    if (answer.status === 201) {
      addReference(answer.data);
      flashStatus("Uploaded.");
    } else if (answer.status === 400 && answer.data) {
      const messages = flatten(answer.data).map((m) => friendly(m, "file"));
      $('.field-error[data-field="file"]').textContent = messages.join(" ");
    } else if (answer.status === 413) {
      $('.field-error[data-field="file"]').textContent = "That file is too large to upload.";
    } else {
      $('.field-error[data-field="file"]').textContent = problem(answer.status, answer.data, "upload the image");
    }
  }

  // ---------------------------------------------------------------- wiring

  form.addEventListener("submit", submit);
  form.addEventListener("change", (event) => {
    const name = event.target.name;
    if (["kind", "model", "quality", "enhanced", "num_images", "reference_image", "reference_type"].includes(name)) {
      syncControls();
    }
    if (["kind", "model", "quality", "enhanced"].includes(name)) {
      clearFieldError("job_type");
      schedulePreview();
    }
    if (name === "seed_mode") {
      syncSeed();
      clearFieldError("seed");
      if (radioValue("seed_mode") === "fixed" && !field("seed").value) field("seed").focus();
    }
    if (name) clearFieldError(name);
  });
  form.addEventListener("input", (event) => {
    const name = event.target.name;
    if (name === "prompt" || name === "negative_prompt") {
      showCounter();
      schedulePreview();
    }
    if (name === "seed" && event.target.value !== "" && radioValue("seed_mode") !== "fixed") {
      setRadio("seed_mode", "fixed"); // typing a seed means "use this one"
      syncSeed();
    }
    if (name === "reference_strength") showStrength();
    if (name) clearFieldError(name);
  });
  field("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  $("#reference-upload").addEventListener("change", upload);
  window.addEventListener("pagehide", () => {
    if (source) source.close(); // frees the browser's connection (and the server's thread) at once
    source = null;
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && !source && !pollTimer) startStream(); // back from the back/forward cache
  });

  for (const job of data.jobs) upsertJob(job, { append: true });
  $("#jobs-empty").hidden = jobs.size > 0;
  showStrength();
  showCounter();
  syncControls();
  loadPreview();
  setLive("connecting", "Connecting…");
  startStream();
})();
