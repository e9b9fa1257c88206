// Progressive enhancement only: every page works without this file.
document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-confirm]");
  if (target && !window.confirm(target.dataset.confirm)) {
    event.preventDefault();
  }
});
document.addEventListener("DOMContentLoaded", () => {
  const path = window.location.pathname;
  document.querySelectorAll(".mainnav a[data-nav]").forEach((link) => {
    if (path.startsWith(new URL(link.href).pathname)) link.setAttribute("aria-current", "page");
  });
});
