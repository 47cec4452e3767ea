// The Verify page: while a run is in progress (#job[data-running]), fetch
// the page again every second and swap in the fresh #job, until the run
// has ended and its report is shown. Without this module the page still
// works: reload it to see the progress.

const EVERY_MS = 1000;

export function start() {
  const poll = async () => {
    const job = document.getElementById('job');
    if (!job || !job.hasAttribute('data-running')) return;
    try {
      const res = await fetch(window.location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html', 'X-Console-Refresh': '1' } });
      if (res.ok && !res.redirected) {
        const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
        const fresh = doc.getElementById('job');
        if (fresh) {
          job.replaceWith(document.importNode(fresh, true));
          if (!fresh.hasAttribute('data-running')) {
            // Tell screen readers the report is there.
            const h = document.getElementById('job-h');
            if (h) { h.setAttribute('tabindex', '-1'); h.focus(); }
            return;
          }
        }
      }
    } catch {
      // The server is away for a moment: try again.
    }
    window.setTimeout(poll, EVERY_MS);
  };
  window.setTimeout(poll, EVERY_MS);
}
