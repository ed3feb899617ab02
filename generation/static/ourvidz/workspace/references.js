// Reference images: uploading one, using an earlier result as one, and listing either in the picker.

import { api } from "./api.js";
import { $, el } from "./dom.js";
import { problem } from "./errors.js";

// form: the job form; urls: the page data's urls; errors: errors.js's createErrors();
// onPicked(): the picker's choice changed (the form brings its controls in line).
export function createReferences({ form, urls, errors, onPicked }) {
  const picker = form.elements.reference_image;

  // Select `ref` in the picker, listing it first (an upload of the same bytes gives the same one).
  function addReference(ref) {
    const name = ref.original_name || "Uploaded image";
    const option = picker.querySelector(`option[value="${CSS.escape(String(ref.id))}"]`) || el("option", {
      value: String(ref.id), dataset: { url: ref.url }, text: `${name} · ${ref.width}×${ref.height}` });
    picker.insertBefore(option, picker.options[1] || null);
    picker.value = String(ref.id);
    errors.clearFieldError("reference_image");
    onPicked();
  }

  function flashStatus(text) {
    const status = $("#upload-status");
    status.textContent = text;
    setTimeout(() => { if (status.textContent === text) status.textContent = ""; }, 3000);
  }

  // A result of an earlier job becomes the reference image of the next one.
  async function useAsReference(button) {
    button.disabled = true;
    const answer = await api(`${urls.images}${button.dataset.imageId}/reference/`, { method: "POST" });
    button.disabled = false;
    if (answer.status === 201) {
      addReference(answer.data);
      $("#reference-section").scrollIntoView({ behavior: "smooth", block: "center" });
      flashStatus("Reference set.");
    } else {
      const messages = answer.status === 400 && answer.data ? errors.texts(answer.data)
        : [problem(answer.status, answer.data, "use the image as a reference")];
      errors.setFieldError("reference_image", messages.join(" "));
    }
  }

  // The file input's change: upload the chosen file.
  async function upload() {
    const input = $("#reference-upload");
    const file = input.files[0];
    if (!file) return;
    errors.clearFieldError("file");
    errors.clearFieldError("reference_image");
    const status = $("#upload-status");
    status.textContent = `Uploading ${file.name}…`;
    const body = new FormData();
    body.append("file", file);
    const answer = await api(urls.references, { method: "POST", body });
    input.value = "";
    status.textContent = "";
    if (answer.status === 201) {
      addReference(answer.data);
      flashStatus("Uploaded.");
    } else if (answer.status === 400 && answer.data) {
      errors.setFieldError("file", errors.texts(answer.data, { file }).join(" "));
    } else if (answer.status === 413) {
      errors.setFieldError("file", "That file is too large to upload.");
    } else {
      errors.setFieldError("file", problem(answer.status, answer.data, "upload the image"));
    }
  }

  return { upload, useAsReference };
}
