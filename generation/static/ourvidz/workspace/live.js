// Live updates of the job cards: the job events stream (server-sent events), with polling of the
// unfinished jobs as the fallback while the stream is unavailable, and the badge that says which.

import { $ } from "./dom.js";

const POLL_MS = 2000;
const STREAM_RETRY_MS = 30000;

const TITLES = {
  live: "Updates arrive as they happen.",
  polling: `The live connection is unavailable; checking for updates every ${POLL_MS / 1000} seconds.`,
  connecting: "Connecting to live updates…",
  offline: "Updates are paused.",
};

// eventsUrl: the stream; cards: cards.js's createCards() (upsert, refresh, unfinishedIds).
export function createLive(eventsUrl, cards) {
  let source = null;
  let streamFailures = 0;
  let pollTimer = null;
  let streamRetry = null;
  let polling = false;

  function setLive(state, text) {
    const badge = $("#live-status");
    badge.dataset.state = state;
    badge.textContent = text;
    badge.title = TITLES[state] || "";
  }

  // Catch up on anything missed while the stream was not connected.
  async function resync() {
    await Promise.all(cards.unfinishedIds().map(cards.refresh));
  }

  function startStream() {
    clearTimeout(streamRetry);
    streamRetry = null;
    if (!("EventSource" in window)) {
      startPolling();
      return;
    }
    streamFailures = 0;
    source = new EventSource(eventsUrl);
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
      cards.upsert(job);
    });
    source.addEventListener("preview", (event) => {
      try {
        cards.preview(JSON.parse(event.data));
      } catch (error) {
        // a preview is a glimpse: a bad one is skipped
      }
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
      const statuses = await Promise.all(cards.unfinishedIds().map(cards.refresh));
      if (statuses.some((s) => s === 401 || s === 403)) {
        stopPolling();
        clearTimeout(streamRetry);
        setLive("offline", "Logged out — reload");
      }
    } finally {
      polling = false;
    }
  }

  function start() {
    setLive("connecting", "Connecting…");
    startStream();
  }

  // Leaving the page frees the browser's connection (and the server's thread) at once.
  function onPageHide() {
    if (source) source.close();
    source = null;
  }

  function onPageShow(event) {
    if (event.persisted && !source && !pollTimer) startStream(); // back from the back/forward cache
  }

  return { start, onPageHide, onPageShow };
}
