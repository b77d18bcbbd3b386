// gnomon dashboard: the pages work without this file. It adds a "Live" switch that re-fetches the page every
// 5 s and swaps its [data-live] parts, and a confirmation before forms marked data-confirm are sent.
(() => {
  const live = document.getElementById("live");
  if (live) {
    live.closest("label").hidden = false;
    live.checked = localStorage.getItem("gnomon-live") !== "off";
    live.addEventListener("change", () => localStorage.setItem("gnomon-live", live.checked ? "on" : "off"));
    setInterval(async () => {
      if (!live.checked || document.hidden) return;
      const response = await fetch(location.href, {credentials: "same-origin"}).catch(() => null);
      if (!response || !response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").querySelectorAll("[data-live]");
      document.querySelectorAll("[data-live]").forEach((old, i) => fresh[i] && old.replaceWith(fresh[i]));
    }, 5000);
  }
  document.addEventListener("submit", (event) => {
    const question = event.target.dataset.confirm;
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
