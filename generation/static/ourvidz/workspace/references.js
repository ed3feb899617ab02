// Reference images: uploading one (chosen, dropped on the reference section or pasted), using an
// earlier result as one, and listing either in the picker.

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
    input.value = "";
    if (file) await uploadFile(file);
  }

  // Upload `file` as a reference image and choose it; the server checks it and the page words its answer.
  async function uploadFile(file) {
    errors.clearFieldError("file");
    errors.clearFieldError("reference_image");
    const status = $("#upload-status");
    status.textContent = `Uploading ${file.name}…`;
    const body = new FormData();
    body.append("file", file);
    const answer = await api(urls.references, { method: "POST", body });
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

  // Dragging files over the reference section lights it up; dropping uploads the first one. Where the
  // job type takes no reference (the section is off) it is no drop target, and the hint says why.
  const section = $("#reference-section");
  let dragDepth = 0; // enter/leave pairs of the section's own children while dragging over it
  const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");

  function onDragEnter(event) {
    if (!carriesFiles(event) || section.disabled) return;
    dragDepth += 1;
    section.classList.add("drop-target");
  }

  function onDragOver(event) {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // a file dropped here never opens in the tab instead
    event.dataTransfer.dropEffect = section.disabled ? "none" : "copy";
  }

  function onDragLeave(event) {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) section.classList.remove("drop-target");
  }

  function onDrop(event) {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    section.classList.remove("drop-target");
    const [file] = event.dataTransfer.files;
    if (file && !section.disabled) uploadFile(file);
  }

  // An image pasted anywhere on the page but a text box (which takes pastes itself) becomes the reference.
  function onPaste(event) {
    const target = event.target;
    const typing = target.closest && target.closest("textarea, [contenteditable], " +
      "input:not([type=radio], [type=checkbox], [type=range], [type=file], [type=button], [type=submit])");
    if (typing || section.disabled || !event.clipboardData) return;
    const file = Array.from(event.clipboardData.files).find((f) => f.type.startsWith("image/"));
    if (!file) return;
    event.preventDefault();
    section.scrollIntoView({ behavior: "smooth", block: "nearest" });
    uploadFile(file);
  }

  section.addEventListener("dragenter", onDragEnter);
  section.addEventListener("dragover", onDragOver);
  section.addEventListener("dragleave", onDragLeave);
  section.addEventListener("drop", onDrop);

  return { upload, useAsReference, onPaste };
}
