// A confirmation that needs the flow's name typed (experiments.console.actions) keeps its button
// disabled until the name matches exactly. The server checks the name again: this only helps.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-expected]").forEach(function (input) {
    var button = input.form && input.form.querySelector("input[type=submit][data-needs-name]");
    if (!button) {
      return;
    }
    var update = function () {
      button.disabled = input.value.trim() !== input.dataset.expected;
    };
    input.addEventListener("input", update);
    update();
  });
});
