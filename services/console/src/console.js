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
