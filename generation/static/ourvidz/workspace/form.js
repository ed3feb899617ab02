// The job form: which job type the controls select, the controls that depend on it (quantity, enhance,
// aspect ratios, seed, reference section) with the rule that turns one off said in words beside it, the
// expected time, the negative-prompt preview, filling the form from an earlier job, remembering it
// across reloads (draft.js), and submitting.

import { api, newKey } from "./api.js";
import { $, $$, el, formatSeconds, orList, typeLabel } from "./dom.js";
import { createDraft } from "./draft.js";
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
  const poolLabel = (pool) => data.pool_labels[pool] || pool;
  const draft = createDraft(data.user_id);

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
    const ratios = field("aspect_ratio");
    for (const option of ratios.options) {
      option.disabled = !(option.value in type.aspect_ratios);
      const size = type.aspect_ratios[option.value];
      option.title = size ? `${size[0]}×${size[1]}` : "";
    }
    if (ratios.selectedOptions[0] && ratios.selectedOptions[0].disabled) {
      ratios.value = Object.keys(type.aspect_ratios)[0];
    }
    showRules(type);
    syncSeed();
    syncReference(type);
    showExpected(type);
  }

  // Each control the choices turn off says why beside it (and names that text in aria-describedby),
  // in words built from the page's job types: which model makes what, which types enhance.
  function showRules(type) {
    const poolsWhere = (test) => orList([...new Set(data.job_types.filter(test).map((t) => poolLabel(t.pool)))]);
    const onlyKind = (pool) => {
      const kinds = new Set(data.job_types.filter((t) => t.pool === pool).map((t) => t.kind));
      return kinds.size === 1 ? `${poolLabel(pool)} makes ${[...kinds][0]}s only.` : "";
    };
    const model = radioValue("model");
    $("#kind-rule").textContent = onlyKind(model);
    $("#model-rule").textContent = $("#model-sdxl").disabled ? onlyKind("sdxl") : "";
    $("#enhance-rule").textContent = field("enhanced").disabled
      ? `Enhance is for ${poolsWhere((t) => t.enhanced)} jobs.` : "";
    $("#num-images-hint").textContent = type.num_images.length > 1 ? ""
      : `${poolLabel(type.pool)} makes one ${type.kind} per job.`;
    const missing = Array.from(field("aspect_ratio").options).filter((o) => o.disabled).map((o) => o.value);
    $("#aspect-ratio-rule").textContent = missing.length ? `${typeLabel(type)} has no ${orList(missing)} size.` : "";
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
    $("#reference-type-rule").textContent = supported.length && supported.length < typeSelect.options.length
      ? `${typeLabel(type)} takes ${orList(supported)} references only.` : "";
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

  // The form's values, named as the job request's fields (what draft.js keeps; workspace.py's
  // form_state gives the defaults in the same shape).
  function state() {
    const type = currentType();
    return {
      job_type: type.name, prompt: field("prompt").value, negative_prompt: field("negative_prompt").value,
      seed_mode: radioValue("seed_mode"), seed: field("seed").value, num_images: numImages(type),
      aspect_ratio: field("aspect_ratio").value, reference_image: field("reference_image").value,
      reference_type: field("reference_type").value, reference_strength: field("reference_strength").value,
    };
  }

  const hasOption = (name, value) => Array.from(field(name).options).some((o) => o.value === String(value));

  // Set the form to `values` (state()'s shape, any of its fields but those in `skip`). A value the page
  // no longer offers (a job type or reference image that is gone, a number out of range) leaves its
  // control as it was; a reference image that is gone leaves none chosen.
  function setState(values, { skip = new Set() } = {}) {
    const given = (name) => values[name] !== undefined && values[name] !== null && !skip.has(name);
    const type = given("job_type") && typesByName[values.job_type];
    if (type) {
      setRadio("kind", type.kind);
      setRadio("model", type.pool);
      setRadio("quality", type.quality);
      field("enhanced").checked = type.enhanced;
    }
    if (given("prompt")) field("prompt").value = String(values.prompt).slice(0, limits.prompt_max_length);
    if (given("negative_prompt")) {
      field("negative_prompt").value = String(values.negative_prompt).slice(0, limits.negative_prompt_max_length);
    }
    if (given("num_images") && limits.num_images.includes(Number(values.num_images))) {
      setRadio("num_images", String(values.num_images));
    }
    if (given("aspect_ratio") && hasOption("aspect_ratio", values.aspect_ratio)) {
      field("aspect_ratio").value = values.aspect_ratio;
    }
    const seed = given("seed") ? String(values.seed) : null;
    if (seed === "" || (/^\d+$/.test(seed) && Number(seed) <= limits.max_seed)) field("seed").value = seed;
    if (given("seed_mode") && ["random", "fixed"].includes(values.seed_mode)) setRadio("seed_mode", values.seed_mode);
    if (given("reference_image")) {
      field("reference_image").value = hasOption("reference_image", values.reference_image)
        ? String(values.reference_image) : "";
    }
    if (given("reference_type") && hasOption("reference_type", values.reference_type)) {
      field("reference_type").value = values.reference_type;
    }
    const strength = given("reference_strength") ? parseFloat(values.reference_strength) : NaN;
    if (strength >= limits.reference_strength_min && strength <= limits.reference_strength_max) {
      field("reference_strength").value = strength;
    }
    showStrength();
    showCounter();
    syncControls();
    preview.schedule();
    remember();
  }

  function remember() {
    draft.save(state());
  }

  // Fill the form from a job's settings (the "Reuse settings" button on a card).
  function applySettings(job) {
    if (!typesByName[job.job_type]) return;
    setState({
      job_type: job.job_type, prompt: job.prompt,
      negative_prompt: (job.metadata && job.metadata.user_negative_prompt) || "",
      num_images: job.num_images || 1, aspect_ratio: job.aspect_ratio || undefined,
      seed_mode: "fixed", seed: job.seed,
      reference_image: job.reference_image || "", reference_type: job.reference_type || undefined,
      reference_strength: job.reference_strength || undefined,
    });
    form.scrollIntoView({ behavior: "smooth", block: "start" });
    field("prompt").focus({ preventScroll: true });
  }

  // A recent prompt chosen from the list fills the prompt box.
  function usePrompt(text) {
    setState({ prompt: text });
    errors.clearFieldError("prompt");
    const box = field("prompt");
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  // "Reset form": the page's defaults (workspace.py's form_state), an empty prompt included.
  function reset() {
    errors.clearErrors();
    setState(data.form_defaults);
    field("prompt").focus();
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
    remember();
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
    remember();
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
    remember();
  }

  // The prompt box's maxlength cuts a long paste without a word. beforeinput still has the whole text:
  // note how long the prompt would be, and the input event that follows says so if it came out shorter.
  function onPromptBeforeInput(event) {
    const box = event.target;
    const text = event.data ?? (event.dataTransfer ? event.dataTransfer.getData("text/plain") : "");
    promptLength = box.value.length - (box.selectionEnd - box.selectionStart) + (text || "").length;
  }

  // A paste into a box already at its limit changes nothing, so no beforeinput or input event says so:
  // the paste event itself still has the text.
  function onPromptPaste(event) {
    const box = event.target;
    const text = event.clipboardData ? event.clipboardData.getData("text/plain") : "";
    const length = box.value.length - (box.selectionEnd - box.selectionStart) + text.length;
    if (text && length > limits.prompt_max_length) {
      promptLength = length;
      showPromptCut();
    }
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

  // The first state, before any event: the form as this user left it, but for what the address asks
  // for (the Library's "Use these settings again" and "Use as reference" links).
  function start() {
    const asked = new Set(new URLSearchParams(window.location.search).keys());
    if (asked.has("seed")) asked.add("seed_mode");
    const saved = draft.load();
    if (saved) setState(saved, { skip: asked });
    showStrength();
    showCounter();
    syncControls();
    preview.load();
    remember();
  }

  return { field, syncControls, remember, applySettings, reuseSeed, usePrompt, reset, submit, onChange, onInput,
    onPromptBeforeInput, onPromptPaste, onPromptKeydown, start };
}
