// The form as its user left it (settings and the prompt being written), kept in this browser's
// localStorage under the user's id, so a reload or a new tab starts where they were. The form checks
// what it reads back against the page data before using it.

const VERSION = 1; // a stored form of another shape is not read

export function createDraft(userId) {
  const key = `ourvidz.workspace.form.${userId}`;

  function load() {
    try {
      const stored = JSON.parse(localStorage.getItem(key));
      return stored && stored.version === VERSION && typeof stored.form === "object" ? stored.form : null;
    } catch (error) {
      return null; // storage off (private mode, a policy) or not ours: start from the page's form
    }
  }

  function save(form) {
    try {
      localStorage.setItem(key, JSON.stringify({ version: VERSION, form }));
    } catch (error) {
      // Storage full or off: the form works all the same, it just is not remembered.
    }
  }

  return { load, save };
}
