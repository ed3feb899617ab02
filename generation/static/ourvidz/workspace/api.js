// The JSON API with the session cookie: the CSRF header and `X-Error-Codes: 1` on anything but GET
// (validation errors then come as {"field": [{"message", "code"}]}, see generation/api/exceptions.py).

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

// A fresh Idempotency-Key: a retried submission gets the first job back instead of a second one.
export function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Resolves to {status, data}; status 0 when the server could not be reached.
export async function api(url, { method = "GET", json, body, headers = {} } = {}) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET") {
    options.headers["X-CSRFToken"] = csrfToken();
    options.headers["X-Error-Codes"] = "1";
  }
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
