// Library filters apply as soon as a select or date changes; the search applies on Enter (a plain form).
(function () {
  const form = document.getElementById("library-filters");
  if (!form) return;
  form.querySelectorAll("select, input[type=date]").forEach((field) => {
    field.addEventListener("change", () => form.requestSubmit ? form.requestSubmit() : form.submit());
  });
  // Empty filters stay out of the address bar (and out of the pagination links).
  form.addEventListener("submit", () => {
    form.querySelectorAll("select, input").forEach((field) => {
      const isDefault = (field.name === "kind" && field.value === "all") ||
        (field.name === "quality" && field.value === "any") || field.value === "";
      field.disabled = isDefault;
    });
    setTimeout(() => form.querySelectorAll("select, input").forEach((f) => { f.disabled = false; }), 0);
  });
})();
