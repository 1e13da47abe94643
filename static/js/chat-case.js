// A chat case's page: the visitor's messages arrive live on the timeline while the agent writes.
// Each one the page shows counts as read for the composer's collision check
// (seen_interaction_id), as in any chat. Anything else that arrives live (another agent's
// reply, a note) stops that for the current composer, so the server still warns about it.
(function () {
  "use strict";
  var timeline = document.getElementById("timeline-entries");
  if (!timeline) return;
  var blockedField = null; // the composer field that saw something other than the visitor

  function markSeen(node) {
    if (!node || node.nodeType !== 1) return;
    var match = /^interaction-(\d+)$/.exec(node.id || "");
    var field = document.querySelector('#composer-form input[name="seen_interaction_id"]');
    if (!match || !field) return;
    var id = parseInt(match[1], 10);
    if (parseInt(field.value, 10) >= id) return;
    var fromVisitor = node.classList.contains("channel-chat") && node.classList.contains("direction-in");
    if (!fromVisitor) blockedField = field;
    else if (blockedField !== field) field.value = String(id);
  }

  new MutationObserver(function (records) {
    records.forEach(function (record) {
      Array.prototype.forEach.call(record.addedNodes, markSeen);
    });
  }).observe(timeline, { childList: true });
})();
