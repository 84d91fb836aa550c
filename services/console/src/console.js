// The console's only script: copy buttons (the page works without it; the values stay
// selectable). Served from /console/static, allowed by the pages' Content-Security-Policy.
document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-copy]');
  if (!button || !navigator.clipboard) return;
  navigator.clipboard.writeText(button.dataset.copy).then(() => {
    const label = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// Pages that follow something in progress (a grant's doors, an unlock, an encoding) mark it with
// data-live="<seconds>": reload until the server renders the page without it.
const live = document.querySelector('[data-live]');
if (live) {
  const seconds = Math.max(1, Number(live.dataset.live) || 3);
  setTimeout(() => { if (!document.querySelector('dialog[open]')) window.location.reload(); }, seconds * 1000);
}
