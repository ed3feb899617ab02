// Errors on the form: each next to its field (or at the top of the form), worded by wording.js.

import { $, $$, el } from "./dom.js";

const FIELD_NAMES = {
  prompt: "Prompt", negative_prompt: "Negative prompt", num_images: "Quantity", seed: "Seed",
  aspect_ratio: "Aspect ratio", reference_image: "Reference image", reference_type: "Reference use",
  reference_strength: "Strength", job_type: "Job type", file: "Upload",
};

// One field's errors as [{message, code}], from the coded answer ({message, code} objects) or
// DRF's plain one (strings, code undefined).
function items(value) {
  if (Array.isArray(value)) return value.flatMap(items);
  if (value && typeof value === "object") {
    if (typeof value.message === "string") return [{ message: value.message, code: value.code }];
    return Object.values(value).flatMap(items);
  }
  return [{ message: String(value), code: undefined }];
}

// A 400 answer's body as [[field, [{message, code}]]]; a bare list is the non-field errors.
function byField(errors) {
  if (!errors) return [];
  if (Array.isArray(errors) || typeof errors !== "object") return [["non_field_errors", items(errors)]];
  return Object.entries(errors).map(([name, value]) => [name, items(value)]);
}

// A failure that is no validation error: unreachable, logged out, throttled, a server error.
export function problem(status, body, action) {
  if (status === 0) return `Could not reach the server to ${action}. Check your connection and try again.`;
  if (status === 401 || status === 403) {
    // Logged in, yet refused: the session's CSRF token changed (a login or logout in another tab).
    return body && body.code === "permission_denied"
      ? "Your session changed in another tab. Reload the page and try again."
      : "You have been logged out. Reload the page and log in again.";
  }
  if (status === 402 && body && body.detail) {
    return `${body.detail} Ask an administrator for more credits; your balance is on the Account page.`;
  }
  if (status === 429) {
    // A quota names its limit; anything else is the server asking for a pause.
    return body && body.detail ? String(body.detail) : "Too many requests at once; wait a moment and try again.";
  }
  if (body && body.detail) return String(body.detail);
  return `Something went wrong on the server (error ${status}) while trying to ${action}. Please try again.`;
}

// form: the job form; word: wording.js's word(field, error, context).
export function createErrors(form, word) {
  // All texts of a 400 answer, in words (for the upload and "use as reference" lines).
  function texts(errors, context) {
    return byField(errors).flatMap(([name, list]) => list.map((error) => word(name, error, context)));
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
  // context: {sent: the request body} (see wording.js).
  function showErrors(errors, context = {}) {
    let first = null;
    for (const [name, list] of byField(errors)) {
      const words = list.map((error) => word(name, error, context));
      const slot = $(`.field-error[data-field="${name}"]`, form);
      if (slot && name !== "non_field_errors") {
        slot.textContent = words.join(" ");
        const controls = $$(`[name="${name}"]`, form);
        controls.forEach((c) => c.setAttribute("aria-invalid", "true"));
        first = first || controls.find((c) => !c.disabled) || slot;
      } else {
        const label = FIELD_NAMES[name] && name !== "non_field_errors" ? `${FIELD_NAMES[name]}: ` : "";
        words.forEach((t) => showFormError(label + t));
        first = first || $("#form-errors");
      }
    }
    if (first) {
      first.scrollIntoView({ behavior: "smooth", block: "center" });
      if (first.focus && first.matches("input, select, textarea")) first.focus({ preventScroll: true });
    }
  }

  // Show `text` in a field's slot (uploads and "use as reference", which have no control of their own).
  function setFieldError(name, text) {
    $(`.field-error[data-field="${name}"]`, form).textContent = text;
  }

  return { texts, clearFieldError, clearErrors, showFormError, showErrors, setFieldError };
}
