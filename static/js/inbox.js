// Approvals inbox keyboard shortcuts: j/k next/previous, a approve, r reject, o open.
// Progressive enhancement only: without this file every row has its own buttons and the
// ticked-requests form works as is.
(() => {
  const form = document.getElementById("inbox-form");
  if (!form) return;
  const rows = [...form.querySelectorAll("tr[data-inbox-item]")];
  const announce = document.getElementById("inbox-announce");
  let current = -1;
  let pendingReject = null;

  const say = (text) => {
    if (announce) announce.textContent = text;
  };
  const label = (row) => row.getAttribute("aria-label");
  const select = (index) => {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("is-current", i === current));
    const row = rows[current];
    row.focus();
    row.scrollIntoView({ block: "nearest" });
    say(`${label(row)} (${current + 1} of ${rows.length})`);
  };
  const typing = (el) => el && el.closest("input, textarea, select, [contenteditable]");

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const row = rows[current];
    switch (event.key) {
      case "j":
        select(current + 1);
        break;
      case "k":
        select(current < 0 ? 0 : current - 1);
        break;
      case "a":
        if (!row) return say("Press j to choose a request first.");
        say(`Approving ${label(row)}.`);
        row.querySelector("[data-inbox-approve]").click();
        break;
      case "r": {
        if (!row) return say("Press j to choose a request first.");
        const comment = row.querySelector("[data-inbox-comment]");
        if (comment.value.trim()) {
          say(`Rejecting ${label(row)}.`);
          row.querySelector("[data-inbox-reject]").click();
        } else {
          pendingReject = row;
          comment.focus();
          say(`Write why you reject ${label(row)}, then press Enter. Escape cancels.`);
        }
        break;
      }
      case "o":
        if (!row) return say("Press j to choose a request first.");
        window.location.assign(row.querySelector("a[href]").href);
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  // In a row's comment: Enter rejects when r asked for the reason; otherwise Enter does not
  // submit the whole form (which would decide the ticked requests).
  form.addEventListener("keydown", (event) => {
    const comment = event.target.closest("[data-inbox-comment]");
    if (!comment) return;
    const row = comment.closest("tr[data-inbox-item]");
    if (event.key === "Escape") {
      pendingReject = null;
      select(rows.indexOf(row));
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (pendingReject === row && comment.value.trim()) {
        say(`Rejecting ${label(row)}.`);
        row.querySelector("[data-inbox-reject]").click();
      } else {
        say("Press Escape, then a to approve or r to reject this request.");
      }
    }
  });

  rows.forEach((row, i) => row.addEventListener("focusin", () => {
    current = i;
    rows.forEach((r, j) => r.classList.toggle("is-current", j === i));
  }));
})();
