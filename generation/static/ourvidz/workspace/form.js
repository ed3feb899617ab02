// The job form: which job type the controls select, the controls that depend on it (quantity, enhance,
// aspect ratios, seed, reference section), the expected time, the negative-prompt preview, filling the
// form from an earlier job, and submitting.

import { api, newKey } from "./api.js";
import { $, $$, el, formatSeconds, typeLabel } from "./dom.js";
import { problem } from "./errors.js";
import { createPreview } from "./preview.js";
import { noReferenceText } from "./wording.js";

const REFERENCE_HINTS = {
  style: "Strength: how strongly the reference's look is applied.",
  composition: "Strength: how closely the result keeps the reference's layout.",
  character: "Strength: how closely the result keeps the reference's subject.",
};

// form: the <form>; data: the page data; errors: errors.js's createErrors(); onCreated(job): a job
// the server accepted.
export function createForm({ form, data, errors, onCreated }) {
  const typesByName = Object.fromEntries(data.job_types.map((t) => [t.name, t]));
  const { limits } = data;

  const field = (name) => form.elements[name];
  const radioValue = (name) => {
    const checked = form.querySelector(`input[name="${name}"]:checked`);
    return checked ? checked.value : "";
  };
  const setRadio = (name, value) => {
    const radio = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (radio) radio.checked = true;
  };

  const preview = createPreview(data.urls.negative_prompt, () => ({
    type: currentType(), prompt: field("prompt").value, negative_prompt: field("negative_prompt").value,
  }));

  // The job-type row the kind / model / quality / enhance controls select (data.type_keys).
  function currentType() {
    const kind = radioValue("kind") || "image";
    const model = kind === "video" ? "wan" : radioValue("model") || "sdxl";
    const enhanced = model === "wan" && field("enhanced").checked;
    const key = `${kind}:${model}:${radioValue("quality") || "fast"}:${enhanced ? 1 : 0}`;
    return typesByName[data.type_keys[key]];
  }

  function numImages(type) {
    const n = parseInt(radioValue("num_images"), 10);
    return type.num_images.includes(n) ? n : type.num_images[0];
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
      if (radio.disabled && radio.checked) setRadio("num_images", String(type.num_images[0]));
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
    const label = type.kind === "video" ? "Generate video" : n > 1 ? `Generate ${n} images` : "Generate image";
    // The price, where this user pays one (the job-type table's credits, charged per job).
    $("#submit-job").textContent = data.account.charged
      ? `${label} · ${type.credits} credit${type.credits === 1 ? "" : "s"}` : label;
  }

  function syncSeed() {
    const fixed = radioValue("seed_mode") === "fixed";
    field("seed").classList.toggle("inactive", !fixed);
    field("seed").placeholder = fixed ? "Enter a seed" : "A new one each time";
  }

  function syncReference(type) {
    const supported = type.reference_types;
    const section = $("#reference-section");
    section.disabled = supported.length === 0;
    $("#reference-hint").textContent = supported.length ? "" : noReferenceText(type);
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
    $("#prompt-counter").textContent = `${field("prompt").value.length} / ${limits.prompt_max_length}`;
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
    setRadio("num_images", String(job.num_images || type.num_images[0]));
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
    preview.schedule();
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    field("prompt").focus({ preventScroll: true });
  }

  // A result's "Reuse" button: its seed becomes the next job's.
  function reuseSeed(seed) {
    setRadio("seed_mode", "fixed");
    const input = field("seed");
    input.value = seed;
    syncSeed();
    errors.clearFieldError("seed");
    input.scrollIntoView({ behavior: "smooth", block: "center" });
    input.focus({ preventScroll: true });
    input.classList.remove("flash");
    void input.offsetWidth; // restart the animation
    input.classList.add("flash");
  }

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

  // The header's balance, after a submission charged it.
  async function refreshBalance() {
    const { status, data: account } = await api(data.urls.account);
    const shown = $("#credits-balance");
    if (status === 200 && shown) shown.textContent = `${account.credits} credit${account.credits === 1 ? "" : "s"}`;
  }

  async function submit(event) {
    event.preventDefault();
    if (submitting) return;
    errors.clearErrors();
    const body = payload();
    if (radioValue("seed_mode") === "fixed" && body.seed === "") {
      errors.showErrors({ seed: [{ message: "Enter a seed, or choose Random.", code: "required" }] });
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
      onCreated(job);
      refreshBalance();
    } else if (status === 400) {
      errors.showErrors(job, { sent: body });
    } else {
      errors.showFormError(problem(status, job, "submit the job"));
    }
  }

  // The form's events (main.js attaches them): dependent controls follow, a field's error goes
  // once it changes, the preview follows the prompts and the job type.
  function onChange(event) {
    const name = event.target.name;
    if (["kind", "model", "quality", "enhanced", "num_images", "reference_image", "reference_type"].includes(name)) {
      syncControls();
    }
    if (["kind", "model", "quality", "enhanced"].includes(name)) {
      errors.clearFieldError("job_type");
      preview.schedule();
    }
    if (name === "seed_mode") {
      syncSeed();
      errors.clearFieldError("seed");
      if (radioValue("seed_mode") === "fixed" && !field("seed").value) field("seed").focus();
    }
    if (name) errors.clearFieldError(name);
  }

  let promptLength = 0; // what the prompt box's last input would have made (onPromptBeforeInput)
  function onInput(event) {
    const name = event.target.name;
    if (name === "prompt" || name === "negative_prompt") {
      showCounter();
      preview.schedule();
    }
    if (name === "seed" && event.target.value !== "" && radioValue("seed_mode") !== "fixed") {
      setRadio("seed_mode", "fixed"); // typing a seed means "use this one"
      syncSeed();
    }
    if (name === "reference_strength") showStrength();
    if (name === "prompt" && event.target.value.length < promptLength) showPromptCut();
    else if (name) errors.clearFieldError(name);
    promptLength = 0;
  }

  // The prompt box's maxlength cuts a long paste without a word. beforeinput still has the whole text:
  // note how long the prompt would be, and the input event that follows says so if it came out shorter.
  function onPromptBeforeInput(event) {
    const box = event.target;
    const text = event.data ?? (event.dataTransfer ? event.dataTransfer.getData("text/plain") : "");
    promptLength = box.value.length - (box.selectionEnd - box.selectionStart) + (text || "").length;
  }

  function showPromptCut() {
    const max = limits.prompt_max_length;
    errors.setFieldError("prompt", `Cut to ${max} characters: a prompt holds ${max} at most, and this one ` +
      `would have had ${promptLength}.`);
  }

  // Ctrl/Cmd + Enter in the prompt submits.
  function onPromptKeydown(event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  }

  // The first state, before any event.
  function start() {
    showStrength();
    showCounter();
    syncControls();
    preview.load();
  }

  return { field, syncControls, applySettings, reuseSeed, submit, onChange, onInput, onPromptBeforeInput, onPromptKeydown,
    start };
}
