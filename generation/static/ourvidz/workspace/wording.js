// Error messages in the page's own words, chosen by field and error code (the API's answers carry
// codes when asked with X-Error-Codes: 1). Numbers come from the page data's limits and job types.
// A code this table does not know shows the server's message as it is.

import { megabytes, orList, typeLabel } from "./dom.js";

const NO_LONGER_AVAILABLE = "That reference image is no longer available; pick another or upload it again.";
const CHOOSE_A_FILE = "Choose an image file to upload.";
const FORMATS = "Upload a PNG, JPEG or WebP picture.";

const own = (table, key) => (table && Object.hasOwn(table, key) ? table[key] : undefined);
const decimal = (number) => Number(number).toFixed(1);
const capitalized = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// Why a job type takes no reference image (the reference section's hint, and the API's
// `unsupported` answer for such a type).
export function noReferenceText(type) {
  return type.pool === "wan" && type.kind === "image"
    ? "WAN images can't start from a reference image. Choose SDXL, or make a video."
    : `This server can't use reference images for ${typeLabel(type)}.`;
}

// Each entry: text, or (context) => text; null falls back to the server's message.
// context: {limits, types, poolLabels (pool -> its display name), type (the job type sent), value (the
// field's value sent), file (an upload)}.
const BY_FIELD = {
  prompt: {
    required: "Describe what you want to generate.",
    null: "Describe what you want to generate.",
    blank: "Describe what you want to generate.",
    max_length: ({ limits }) => `Too long: ${limits.prompt_max_length} characters at most.`,
  },
  negative_prompt: {
    max_length: ({ limits }) => `Too long: ${limits.negative_prompt_max_length} characters at most.`,
  },
  num_images: {
    invalid: "Enter a whole number.",
    invalid_choice: ({ limits }) => `Must be ${orList(limits.num_images)}.`,
    single_output: ({ limits, types, poolLabels, type }) => {
      if (!type) return null;
      const several = limits.num_images.filter((n) => n > 1);
      const batched = types.filter((t) => t.num_images.length > 1);
      const models = [...new Set(batched.map((t) => poolLabels[t.pool] || t.pool))];
      return `${typeLabel(type)} makes one ${type.kind} per job; only ${orList(models)} types make ${orList(several)}.`;
    },
  },
  seed: {
    required: "Enter a seed, or choose Random.", // the page's own check: "Fixed" with no seed
    invalid: "Enter a whole number.",
    max_value: ({ limits }) => `Must be ${limits.max_seed} or less.`,
    min_value: "Must be 0 or more.",
  },
  aspect_ratio: {
    invalid_choice: ({ limits, value }) => `“${value}” is not one of the choices: ${orList(limits.aspect_ratios)}.`,
  },
  reference_image: {
    required: "Choose the reference image to use.",
    does_not_exist: NO_LONGER_AVAILABLE,
    incorrect_type: NO_LONGER_AVAILABLE,
  },
  reference_type: {
    required: ({ type }) => (type && type.reference_types.length
      ? `Choose what to use the reference image for: ${orList(type.reference_types)}.`
      : "Choose what to use the reference image for."),
    unsupported: ({ type, value }) => {
      if (!type) return null;
      const others = type.reference_types.filter((t) => t !== value);
      if (!others.length || (type.pool === "wan" && type.kind === "image")) return noReferenceText(type);
      const what = value ? `${capitalized(String(value))} references are` : "This reference use is";
      return `${what} not available for ${typeLabel(type)} on this server now; use ${orList(others)}.`;
    },
  },
  reference_strength: {
    invalid: "Enter a number.",
    max_value: ({ limits }) => `Must be ${decimal(limits.reference_strength_max)} or less.`,
    min_value: ({ limits }) => `Must be ${decimal(limits.reference_strength_min)} or more.`,
  },
  // An upload (POST /api/references/).
  file: {
    required: CHOOSE_A_FILE,
    null: CHOOSE_A_FILE,
    invalid: CHOOSE_A_FILE,
    no_name: CHOOSE_A_FILE,
    empty: `That file is empty. ${CHOOSE_A_FILE}`,
    too_large: ({ limits, file }) => (file
      ? `That file is too large (${megabytes(file.size)}); the limit is ${megabytes(limits.reference_max_bytes)}.`
      : `That file is too large; the limit is ${megabytes(limits.reference_max_bytes)}.`),
    unreadable: `That file is not an image we can read. ${FORMATS}`,
    format: `That kind of image is not accepted. ${FORMATS}`,
    too_many_pixels: "That picture has too many pixels for a reference image. Upload a smaller one.",
  },
  // A result used as a reference (POST /api/images/<id>/reference/).
  image: {
    too_large: ({ limits }) => `That image is too large to use as a reference; the limit is ${megabytes(limits.reference_max_bytes)}.`,
    unreadable: "That image could not be read, so it can't be used as a reference.",
    format: "That image's format can't be used as a reference.",
    too_many_pixels: "That image has too many pixels to use as a reference.",
  },
};

const BY_CODE = {
  required: "This is required.",
  null: "This is required.",
  blank: "This can't be empty.",
  invalid_choice: ({ value }) => (value === undefined ? null : `“${value}” is not one of the choices.`),
};

// word(field, {message, code}, {sent, file}): the text to show for one error of `field`.
// `sent` is the request body the answer is about, `file` the file an upload sent.
export function createWording({ limits, job_types: types, pool_labels: poolLabels }) {
  const typesByName = Object.fromEntries(types.map((t) => [t.name, t]));
  return function word(field, { message, code }, { sent = {}, file = null } = {}) {
    const entry = own(own(BY_FIELD, field), code) ?? own(BY_CODE, code);
    const context = { limits, types, poolLabels, type: typesByName[sent.job_type], value: sent[field], file };
    const text = typeof entry === "function" ? entry(context) : entry;
    return text || String(message);
  };
}
