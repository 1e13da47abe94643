// The composer's canned responses (templates/cases/_macro_picker.html): "Insert" fetches the
// chosen macro, filled for this case by the server as plain text, and puts it at the cursor in
// the composer's textarea. Without this script the picker's GET form reloads the page instead.
(function () {
  "use strict";
  var typedIn = typeof WeakSet === "function" ? new WeakSet() : null;

  // Where the agent last was in the textarea; never focused yet: the end of what is there.
  document.addEventListener("focusin", function (evt) {
    if (typedIn && evt.target.tagName === "TEXTAREA") typedIn.add(evt.target);
  });

  function insertAtCursor(area, text) {
    var start = area.value.length;
    var end = start;
    if (typedIn && typedIn.has(area)) {
      start = area.selectionStart;
      end = area.selectionEnd;
    } else if (area.value && !/\n$/.test(area.value)) {
      text = "\n" + text;
    }
    area.setRangeText(text, start, end, "end");
    area.focus();
    area.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function showError(picker, message) {
    var slot = picker.querySelector(".field-error");
    if (!slot) return;
    slot.textContent = message;
    slot.hidden = !message;
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest("[data-macro-insert]");
    if (!button) return;
    var picker = button.closest(".macro-picker");
    var select = picker && picker.querySelector("select");
    var option = select && select.options[select.selectedIndex];
    var area = picker && document.querySelector(picker.getAttribute("data-insert-into"));
    if (!option || !area || !option.getAttribute("data-render-url")) return; // the form reloads
    evt.preventDefault();
    showError(picker, "");
    button.disabled = true;
    fetch(option.getAttribute("data-render-url"), {
      credentials: "same-origin",
      headers: { Accept: "text/plain" },
    })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (text) {
        insertAtCursor(area, text);
      })
      .catch(function (error) {
        showError(
          picker,
          error.message === "403" || error.message === "404"
            ? "That canned response is not available on this case any more: reload the page."
            : "Could not insert the canned response. Try again, or reload the page."
        );
      })
      .finally(function () {
        button.disabled = false;
      });
  });
})();
